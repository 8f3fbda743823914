//! The decline classes: which KakaoPay declines a later retry may fix (soft: dunning
//! runs its schedule) and which none can (hard: the subscription ends at once). Data, in
//! one table; documented in docs/BILLING_POLICY.md ("Decline classes").

/// Whether retrying a declined charge can ever succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeclineClass {
    /// A later attempt may succeed (balance, limits, the card company's refusal): the
    /// dunning schedule runs.
    Soft,
    /// No retry can succeed (the SID is gone, or belongs to someone else): dunning ends at
    /// once, without using the remaining attempts.
    Hard,
}

impl DeclineClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineClass::Soft => "soft",
            DeclineClass::Hard => "hard",
        }
    }
}

/// One row of the table: KakaoPay's `error_code`, optionally narrowed to one
/// `extras.method_result_code` (a row with a method-result code wins over the code's row
/// without one), and the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeclineRule {
    pub code: i64,
    pub method_result_code: Option<&'static str>,
    pub class: DeclineClass,
    /// What KakaoPay means by it (kakaopay-api notes).
    pub meaning: &'static str,
}

const fn rule(code: i64, class: DeclineClass, meaning: &'static str) -> DeclineRule {
    DeclineRule {
        code,
        method_result_code: None,
        class,
        meaning,
    }
}

/// The KakaoPay codes that are declines, and their class. A code not listed here (and
/// not one of the other kinds in `classify_code`) is treated as soft and logged: a
/// wrong "soft" costs a few retries, a wrong "hard" ends a customer's subscription.
///
/// The notes list no method-result code that changes a decline's class (`USER_LOCKED`
/// makes −780 transient, not a decline: see `classify_code`), so no row narrows one yet.
pub const DECLINE_RULES: &[DeclineRule] = &[
    rule(
        -780,
        DeclineClass::Soft,
        "approval failed at the card or wallet",
    ),
    rule(
        -782,
        DeclineClass::Soft,
        "recurring charge failed (balance, limit, card company)",
    ),
    rule(-797, DeclineClass::Soft, "per-transaction limit exceeded"),
    rule(-752, DeclineClass::Soft, "the SID's monthly limit reached"),
    rule(-750, DeclineClass::Hard, "no such SID"),
    rule(-751, DeclineClass::Hard, "the SID is inactive"),
    rule(
        -753,
        DeclineClass::Hard,
        "partner_user_id differs from the SID's original",
    ),
];

/// The class `rules` give a code (and method-result code); `None` when no row covers it.
pub fn class_in(
    rules: &[DeclineRule],
    code: i64,
    method_result_code: Option<&str>,
) -> Option<DeclineClass> {
    let of_code = || rules.iter().filter(move |r| r.code == code);
    of_code()
        .find(|r| r.method_result_code.is_some() && r.method_result_code == method_result_code)
        .or_else(|| of_code().find(|r| r.method_result_code.is_none()))
        .map(|r| r.class)
}

/// The class of a decline under [`DECLINE_RULES`]; `None` when the table does not list it.
pub fn decline_class(code: i64, method_result_code: Option<&str>) -> Option<DeclineClass> {
    class_in(DECLINE_RULES, code, method_result_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeclineClass::*;

    #[test]
    fn kakaopay_decline_class_table() {
        // (code, method_result_code, class; None = not a listed decline)
        let cases: &[(i64, Option<&str>, Option<DeclineClass>)] = &[
            (-780, None, Some(Soft)),
            (-780, Some("8003"), Some(Soft)),
            (-782, None, Some(Soft)),
            (-782, Some("INSUFFICIENT_BALANCE"), Some(Soft)),
            (-797, None, Some(Soft)),
            (-752, None, Some(Soft)),
            (-750, None, Some(Hard)),
            (-751, None, Some(Hard)),
            (-753, None, Some(Hard)),
            (-751, Some("ANYTHING"), Some(Hard)),
            (-789, None, None),
            (-702, None, None),
            (-1, None, None),
        ];
        for &(code, mrc, want) in cases {
            assert_eq!(decline_class(code, mrc), want, "code {code} mrc {mrc:?}");
        }
    }

    #[test]
    fn a_method_result_row_wins_over_its_codes_row() {
        let rules = [
            rule(-780, Soft, "declined"),
            DeclineRule {
                method_result_code: Some("LOST_CARD"),
                ..rule(-780, Hard, "lost card")
            },
        ];
        let cases = [
            (None, Some(Soft)),
            (Some("LOST_CARD"), Some(Hard)),
            (Some("8003"), Some(Soft)),
        ];
        for (mrc, want) in cases {
            assert_eq!(class_in(&rules, -780, mrc), want, "{mrc:?}");
        }
        assert_eq!(class_in(&rules, -782, Some("LOST_CARD")), None);
    }

    #[test]
    fn every_code_has_one_row_without_a_method_result_code() {
        for r in DECLINE_RULES {
            let n = DECLINE_RULES
                .iter()
                .filter(|o| o.code == r.code && o.method_result_code == r.method_result_code)
                .count();
            assert_eq!(n, 1, "{r:?}");
        }
    }
}
