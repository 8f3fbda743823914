//! Newtype ids, so an order id can never be passed where a user id is expected.

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            sqlx::Type, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<i64> for $name {
            fn from(v: i64) -> Self {
                Self(v)
            }
        }
    };
}

id_type!(
    /// A row of `users`.
    UserId
);

id_type!(
    /// A row of `orders`.
    OrderId
);

id_type!(
    /// A row of `payments`: one PG transaction of an order.
    PaymentId
);

id_type!(
    /// A row of `subscriptions`.
    SubscriptionId
);

id_type!(
    /// A row of `webhook_endpoints`: where an operator wants events delivered.
    WebhookEndpointId
);

id_type!(
    /// A row of `webhook_deliveries`: one event owed to one endpoint.
    DeliveryId
);

id_type!(
    /// A row of `subscription_checkouts`: a recovery or resubscribe checkout at KakaoPay.
    CheckoutId
);
