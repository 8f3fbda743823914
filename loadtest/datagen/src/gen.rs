//! Builds the whole data set in memory, deterministically from the seed and `now`.
//!
//! Each table draws from its own random stream (`stream(seed, TABLE)`), so changing the
//! number of orders does not change the items or the users. Times are whole seconds since
//! the Unix epoch, all relative to `now`. Ids are assigned here (1..n, in creation-time
//! order, as the application would have produced them) and written explicitly.

use std::collections::BTreeSet;

use billing::items::{classify, discount, real_price};
use billing::money::Money;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::words::{self, Family, Form};

pub const HOUR: i64 = 3_600;
pub const DAY: i64 = 86_400;
/// Korea has no daylight saving time: Asia/Seoul is UTC+09:00 all year.
pub const KST_OFFSET: i64 = 9 * HOUR;
/// The store's local charge time (DESIGN §2 default): 02:00 Asia/Seoul.
pub const CHARGE_HOUR_KST: i64 = 2;

const STREAM_BRANDS: u64 = 1;
const STREAM_ITEMS: u64 = 2;
const STREAM_USERS: u64 = 3;
const STREAM_SUBSCRIPTIONS: u64 = 4;
const STREAM_ORDERS: u64 = 5;
pub const STREAM_PASSWORD: u64 = 6;

/// An independent generator per table, derived from the seed.
pub fn stream(seed: u64, table: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ table.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub items: usize,
    pub users: usize,
    /// All paid orders, the subscriptions' first orders included.
    pub orders: usize,
    pub subscriptions: usize,
}

#[derive(Debug)]
pub struct Item {
    pub id: i64,
    pub brand: String,
    pub title: String,
    pub description: String,
    pub main_function: String,
    pub intake: String,
    pub precautions: String,
    pub serving_use: String,
    pub preservation: String,
    pub distribution_period: String,
    pub standard: String,
    pub capacity: String,
    pub thumbnail_url: String,
    pub description_image_url: String,
    pub origin_price: i64,
    pub discount_rate: i32,
    pub categories: Vec<&'static str>,
    pub selling: bool,
    pub sales: i64,
    pub view_count: i64,
    pub deleted_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Item {
    pub fn unit_price(&self) -> i64 {
        real_price(Money(self.origin_price), self.discount_rate).0
    }
    pub fn unit_discount(&self) -> i64 {
        discount(Money(self.origin_price), self.discount_rate).0
    }
    fn exists_at(&self, t: i64) -> bool {
        self.created_at <= t && self.deleted_at.is_none_or(|d| d > t)
    }
}

#[derive(Debug)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub display_name: String,
    pub real_name: String,
    pub phone: String,
    pub city: String,
    pub detail_address: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Line {
    /// Index into `Data::items` (id − 1).
    pub item: u32,
    pub quantity: i32,
}

#[derive(Debug)]
pub struct Order {
    pub id: i64,
    /// Index into `Data::users` (id − 1).
    pub user: u32,
    pub subscription_id: Option<i64>,
    pub period_days: Option<i32>,
    pub lines: Vec<Line>,
    pub created_at: i64,
    pub paid_at: i64,
}

#[derive(Debug)]
pub struct Subscription {
    pub id: i64,
    pub user: u32,
    pub period_days: i32,
    pub sid: String,
    pub anchor_at: i64,
    pub next_charge_at: i64,
    pub current_cycle: i32,
    pub last_charged_at: i64,
    pub lines: Vec<Line>,
    /// Filled in when the orders get their ids.
    pub first_order_id: i64,
}

#[derive(Debug)]
pub struct Data {
    pub items: Vec<Item>,
    pub users: Vec<User>,
    pub orders: Vec<Order>,
    pub subscriptions: Vec<Subscription>,
}

impl Data {
    pub fn order_item_count(&self) -> usize {
        self.orders.iter().map(|o| o.lines.len()).sum()
    }
    pub fn subscription_item_count(&self) -> usize {
        self.subscriptions.iter().map(|s| s.lines.len()).sum()
    }
}

pub fn generate(seed: u64, sizes: Sizes, now: i64) -> Data {
    let brands = brands(&mut stream(seed, STREAM_BRANDS), 200);
    let items = items(&mut stream(seed, STREAM_ITEMS), sizes.items, &brands, now);
    let users = users(&mut stream(seed, STREAM_USERS), sizes.users, now);
    let mut subscriptions = subscriptions(
        &mut stream(seed, STREAM_SUBSCRIPTIONS),
        sizes.subscriptions,
        &items,
        &users,
        now,
    );
    let one_time = sizes.orders.saturating_sub(sizes.subscriptions);
    let orders = orders(
        &mut stream(seed, STREAM_ORDERS),
        one_time,
        &items,
        &users,
        &mut subscriptions,
        now,
    );
    Data {
        items,
        users,
        orders,
        subscriptions,
    }
}

// ---- small random helpers ----------------------------------------------------------------

fn pick<'a, T>(rng: &mut StdRng, from: &'a [T]) -> &'a T {
    &from[rng.random_range(0..from.len())]
}

/// `true` with probability `per_mille` / 1000.
fn chance(rng: &mut StdRng, per_mille: u32) -> bool {
    rng.random_range(0..1000) < per_mille
}

/// Picks an index with probability proportional to its weight (binary search over the
/// cumulative sums: no floats, so the choice depends on the seed only).
struct Weighted {
    cumulative: Vec<u64>,
}

impl Weighted {
    fn new(weights: impl IntoIterator<Item = u64>) -> Self {
        let mut sum = 0u64;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                sum += w;
                sum
            })
            .collect();
        Self { cumulative }
    }

    fn is_empty(&self) -> bool {
        self.cumulative.last().is_none_or(|&t| t == 0)
    }

    fn pick(&self, rng: &mut StdRng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return 0;
        }
        let r = rng.random_range(0..total);
        self.cumulative.partition_point(|&c| c <= r)
    }
}

/// `(value, weight)` tables.
fn weighted<T: Copy>(rng: &mut StdRng, table: &[(T, u32)]) -> T {
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut r = rng.random_range(0..total);
    for (v, w) in table {
        if r < *w {
            return *v;
        }
        r -= w;
    }
    table[table.len() - 1].0
}

/// `n` times drawn uniformly from `[from, to]`, sorted (ids follow creation time).
fn sorted_times(rng: &mut StdRng, n: usize, from: i64, to: i64) -> Vec<i64> {
    let mut t: Vec<i64> = (0..n).map(|_| rng.random_range(from..=to)).collect();
    t.sort_unstable();
    t
}

/// 12,345 → "12,345".
fn thousands(v: i64) -> String {
    let digits = v.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---- brands ---------------------------------------------------------------------------

/// `n` distinct brand names: prefix + suffix pairs in a seeded order.
fn brands(rng: &mut StdRng, n: usize) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for p in words::BRAND_PREFIXES {
        for s in words::BRAND_SUFFIXES {
            // "헬스헬스케어", "라이프라이프": skip the stutters.
            if s.starts_with(p) || p.ends_with(s) {
                continue;
            }
            all.push(format!("{p}{s}"));
        }
    }
    // Fisher–Yates over the first n places.
    let n = n.min(all.len());
    for i in 0..n {
        let j = rng.random_range(i..all.len());
        all.swap(i, j);
    }
    all.truncate(n);
    all
}

// ---- items ----------------------------------------------------------------------------

fn items(rng: &mut StdRng, n: usize, brands: &[String], now: i64) -> Vec<Item> {
    // A few brands carry much of the catalog (Zipf-like weights).
    let brand_weights = Weighted::new((0..brands.len()).map(|i| 1_000_000 / (i as u64 + 3)));
    let family_weights = Weighted::new(words::FAMILIES.iter().map(|f| u64::from(f.weight)));
    let created = sorted_times(rng, n, now - 730 * DAY, now - HOUR);
    let mut out = Vec::with_capacity(n);
    for (i, &created_at) in created.iter().enumerate() {
        let id = i as i64 + 1;
        let family = &words::FAMILIES[family_weights.pick(rng)];
        let brand = brands[brand_weights.pick(rng)].clone();
        out.push(item(
            rng,
            id,
            family,
            &family_weights,
            brand,
            created_at,
            now,
        ));
    }
    out
}

struct Pack {
    /// The title's count part: "60정", "240g", "20ml x 30포".
    label: String,
    capacity: String,
    intake: String,
    /// Milligrams a day, for the `standard` text.
    daily_mg: i64,
}

fn pack(rng: &mut StdRng, form: Form) -> Pack {
    match form {
        Form::Tablet | Form::Capsule | Form::SoftGel => {
            let (unit, counts, sizes): (&str, &[i64], &[i64]) = match form {
                Form::Tablet => ("정", &[30, 60, 90, 120, 180], &[500, 600, 800, 1000, 1200]),
                Form::Capsule => ("캡슐", &[30, 60, 90, 120], &[400, 500, 700]),
                _ => ("캡슐", &[30, 60, 90, 180], &[500, 1000, 1200]),
            };
            let count = *pick(rng, counts);
            let mg = *pick(rng, sizes);
            let per_dose = if count >= 60 && chance(rng, 500) {
                2
            } else {
                1
            };
            let total = mg * count;
            Pack {
                label: format!("{count}{unit}"),
                capacity: format!(
                    "{mg}mg x {count}{unit} ({}.{}g)",
                    total / 1000,
                    total % 1000 / 100
                ),
                intake: format!("1일 1회, 1회 {per_dose}{unit}을 충분한 물과 함께 섭취하십시오."),
                daily_mg: mg * per_dose,
            }
        }
        Form::Stick => {
            let count = *pick(rng, &[14i64, 30, 60, 90]);
            let grams = *pick(rng, &[2i64, 3, 5, 10]);
            Pack {
                label: format!("{count}포"),
                capacity: format!("{grams}g x {count}포 ({}g)", grams * count),
                intake: "1일 1회, 1회 1포를 그대로 또는 물에 타서 섭취하십시오.".to_owned(),
                daily_mg: grams * 1000,
            }
        }
        Form::Powder => {
            let grams = *pick(rng, &[100i64, 120, 240, 300, 500]);
            Pack {
                label: format!("{grams}g"),
                capacity: format!("{grams}g"),
                intake: "1일 2회, 1회 1스푼(약 3g)을 따뜻한 물에 타서 섭취하십시오.".to_owned(),
                daily_mg: 6000,
            }
        }
        Form::Liquid => {
            let count = *pick(rng, &[10i64, 14, 30, 60]);
            let ml = *pick(rng, &[15i64, 20, 50, 80]);
            Pack {
                label: format!("{ml}ml x {count}포"),
                capacity: format!("{ml}ml x {count}포 ({}ml)", ml * count),
                intake: format!("1일 1회, 1회 1포({ml}ml)를 흔들어 섭취하십시오."),
                daily_mg: ml * 1000,
            }
        }
    }
}

fn item(
    rng: &mut StdRng,
    id: i64,
    family: &Family,
    family_weights: &Weighted,
    brand: String,
    created_at: i64,
    now: i64,
) -> Item {
    let name = *pick(rng, family.names);
    let form = *pick(rng, family.forms);
    let pack = pack(rng, form);

    let mut title: Vec<&str> = Vec::with_capacity(5);
    if chance(rng, 450) {
        let adjective = if !family.adjectives.is_empty() && chance(rng, 400) {
            *pick(rng, family.adjectives)
        } else {
            *pick(rng, words::TITLE_ADJECTIVES)
        };
        if !name.contains(adjective) {
            title.push(adjective);
        }
    }
    title.push(name);
    if chance(rng, 300) {
        title.push(*pick(rng, words::TITLE_VARIANTS));
    }
    title.push(&pack.label);
    let mut title = title.join(" ");
    match rng.random_range(0..100) {
        0..=3 => title.push_str(" x 2박스"),
        4..=5 => title.push_str(" x 3박스"),
        6..=7 => title.push_str(" (3개월분)"),
        _ => {}
    }

    // One claim of the family; a fifth of the items also carry another family's claim,
    // so they land in several categories.
    let mut main_function = pick(rng, family.claims).0.to_owned();
    if chance(rng, 200) {
        let other = &words::FAMILIES[family_weights.pick(rng)];
        let claim = pick(rng, other.claims).0;
        if !std::ptr::eq(other, family) && !main_function.contains(claim) {
            main_function.push_str(", ");
            main_function.push_str(claim);
        }
    }
    let categories = classify(&main_function)
        .into_iter()
        .map(|c| c.as_str())
        .collect();

    let standard = if name == family.names[0] {
        format!("{} (1일 섭취량 기준)", family.standard)
    } else {
        format!("{name} {}mg (1일 섭취량 기준)", thousands(pack.daily_mg))
    };
    let first = rng.random_range(0..words::PRECAUTIONS.len());
    let second = rng.random_range(0..words::PRECAUTIONS.len());
    let precautions = if first == second {
        words::PRECAUTIONS[first].to_owned()
    } else {
        format!(
            "{} {}",
            words::PRECAUTIONS[first],
            words::PRECAUTIONS[second]
        )
    };
    let a = rng.random_range(0..words::AUDIENCES.len());
    let b = (a + rng.random_range(1..words::AUDIENCES.len())) % words::AUDIENCES.len();
    let serving_use = format!(
        "{}, {}에게 추천합니다.",
        words::AUDIENCES[a],
        words::AUDIENCES[b]
    );
    let preservation = (*pick(rng, words::PRESERVATION)).to_owned();
    let distribution_period = format!(
        "제조일로부터 {}개월까지",
        pick(rng, &[12, 18, 24, 24, 24, 36])
    );
    let description = format!(
        "{brand} {title}. {} {}",
        pick(rng, words::TAGLINES),
        pick(rng, words::TAGLINES)
    );

    // Prices: whole 100 won, most under 60,000.
    let (lo, hi) = weighted(
        rng,
        &[
            ((5_000, 15_000), 30),
            ((15_000, 30_000), 30),
            ((30_000, 60_000), 25),
            ((60_000, 150_000), 15),
        ],
    );
    let origin_price = rng.random_range(lo / 100..=hi / 100) * 100;
    let discount_rate = match rng.random_range(0..100) {
        0..=29 => 0,
        30..=69 => 5 * rng.random_range(1..=8),
        70..=89 => rng.random_range(1..=40),
        _ => rng.random_range(41..=90),
    };
    // Sales: heavy tail — P(sales ≥ s) ≈ 25 / (s + 25): median ~25, a handful near 50,000.
    let k = rng.random_range(1..=2_000i64);
    let sales = 25 * (2_000 / k - 1) + rng.random_range(0..25);
    let view_count = sales * rng.random_range(3..=30) + rng.random_range(0..=500);

    let (selling, deleted_at) = match rng.random_range(0..1000) {
        0..=9 => (true, Some(rng.random_range(created_at..=now - 60))),
        10..=29 => (false, None),
        _ => (true, None),
    };
    Item {
        id,
        brand,
        title,
        description,
        main_function,
        intake: pack.intake,
        precautions,
        serving_use,
        preservation,
        distribution_period,
        standard,
        capacity: pack.capacity,
        thumbnail_url: format!("https://cdn.pillivery.test/items/{id}/thumbnail.jpg"),
        description_image_url: format!("https://cdn.pillivery.test/items/{id}/detail.jpg"),
        origin_price,
        discount_rate,
        categories,
        selling,
        sales,
        view_count,
        deleted_at,
        created_at,
        updated_at: deleted_at.unwrap_or(created_at),
    }
}

// ---- users ----------------------------------------------------------------------------

fn users(rng: &mut StdRng, n: usize, now: i64) -> Vec<User> {
    let created = sorted_times(rng, n, now - 730 * DAY, now - DAY);
    let city_weights = Weighted::new(words::CITIES.iter().map(|c| u64::from(c.1)));
    let mut phones = BTreeSet::new();
    let mut nicknames = BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    for (i, &created_at) in created.iter().enumerate() {
        let id = i as i64 + 1;
        let surname = weighted(rng, words::SURNAMES);
        let real_name = format!("{surname}{}", pick(rng, words::GIVEN_NAMES));
        let mut display_name = String::new();
        for _ in 0..20 {
            let candidate = format!(
                "{}{}{}",
                pick(rng, words::NICK_ADJECTIVES),
                pick(rng, words::NICK_NOUNS),
                rng.random_range(1..10_000)
            );
            if nicknames.insert(candidate.clone()) {
                display_name = candidate;
                break;
            }
        }
        if display_name.is_empty() {
            // Only when the random space is nearly used up; the id keeps it unique.
            display_name = format!("회원_{id}");
            nicknames.insert(display_name.clone());
        }
        let phone = loop {
            let p = format!("010{}", rng.random_range(20_000_000..=99_999_999u32));
            if phones.insert(p.clone()) {
                break p;
            }
        };
        let (city, _, districts) = words::CITIES[city_weights.pick(rng)];
        let district = pick(rng, districts);
        let road = pick(rng, words::ROADS);
        let detail_address = if chance(rng, 750) {
            format!(
                "{district} {road} {}, {} {}동 {}{:02}호",
                rng.random_range(1..=300),
                pick(rng, words::BUILDINGS),
                rng.random_range(101..=120),
                rng.random_range(1..=25),
                rng.random_range(1..=4)
            )
        } else {
            format!(
                "{district} {road}{}길 {}-{} {}층",
                rng.random_range(1..=60),
                rng.random_range(1..=120),
                rng.random_range(1..=30),
                rng.random_range(1..=5)
            )
        };
        out.push(User {
            id,
            email: format!("user{id}@pillivery.test"),
            display_name,
            real_name,
            phone,
            city: city.to_owned(),
            detail_address,
            created_at,
        });
    }
    out
}

// ---- subscriptions --------------------------------------------------------------------

fn line_count(rng: &mut StdRng, max: usize) -> usize {
    let n = weighted(rng, &[(1usize, 50), (2, 30), (3, 13), (4, 7)]);
    n.min(max)
}

fn quantity(rng: &mut StdRng) -> i32 {
    weighted(rng, &[(1, 70), (2, 22), (3, 8)])
}

/// Up to `n` distinct items that `ok` accepts, drawn by `weights`; falls back to a scan
/// from the oldest item when sampling keeps missing (tiny or very young catalogs).
fn pick_items(
    rng: &mut StdRng,
    n: usize,
    items: &[Item],
    weights: &Weighted,
    ok: impl Fn(&Item) -> bool,
) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::with_capacity(n);
    let taken = |lines: &[Line], i: usize| lines.iter().any(|l| l.item as usize == i);
    let mut tries = 0;
    while lines.len() < n && tries < 64 && !weights.is_empty() {
        tries += 1;
        let i = weights.pick(rng);
        if ok(&items[i]) && !taken(&lines, i) {
            lines.push(Line {
                item: i as u32,
                quantity: quantity(rng),
            });
        }
    }
    if lines.is_empty() {
        let fallback = (0..items.len())
            .find(|&i| ok(&items[i]))
            .or(if items.is_empty() { None } else { Some(0) });
        if let Some(i) = fallback {
            lines.push(Line {
                item: i as u32,
                quantity: quantity(rng),
            });
        }
    }
    lines
}

/// The latest 02:00 Asia/Seoul at or before `t`.
pub fn last_charge_slot(t: i64) -> i64 {
    let offset = CHARGE_HOUR_KST * HOUR - KST_OFFSET; // 02:00 KST = 17:00 UTC the day before
    (t - offset).div_euclid(DAY) * DAY + offset
}

fn subscriptions(
    rng: &mut StdRng,
    n: usize,
    items: &[Item],
    users: &[User],
    now: i64,
) -> Vec<Subscription> {
    if users.is_empty() || items.is_empty() {
        return Vec::new();
    }
    // Subscriptions keep items that are on sale today.
    let weights = Weighted::new(items.iter().map(|i| {
        if i.selling && i.deleted_at.is_none() {
            i.sales as u64 + 20
        } else {
            0
        }
    }));
    let base = last_charge_slot(now);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        // Due dates: one of the next 30 charge slots, uniformly. A period shorter than the
        // distance to the due date would put the last charge in the future, so 14-day
        // subscriptions only fall in the first 14 slots.
        let d = rng.random_range(1..=30i64);
        let period = if d <= 14 {
            weighted(rng, &[(14i64, 10), (30, 70), (60, 12), (90, 8)])
        } else {
            weighted(rng, &[(30i64, 70), (60, 12), (90, 8)])
        };
        let next = base + d * DAY;
        let last = next - period * DAY;
        // A customer who had signed up before the first charge.
        let mut user = rng.random_range(0..users.len());
        for _ in 0..32 {
            if users[user].created_at < last - HOUR {
                break;
            }
            user = rng.random_range(0..users.len());
        }
        let earliest = (now - 365 * DAY).max(users[user].created_at + HOUR);
        let max_cycle = ((next - earliest) / (period * DAY)).clamp(1, 12);
        let cycle = rng.random_range(1..=max_cycle);
        let anchor = next - cycle * period * DAY;
        let n = weighted(rng, &[(1usize, 60), (2, 30), (3, 10)]);
        let lines = pick_items(rng, n, items, &weights, |i| i.created_at <= anchor - HOUR);
        let sid: String = std::iter::once('S')
            .chain((0..19).map(|_| char::from(*pick(rng, words::ALNUM))))
            .collect();
        out.push(Subscription {
            id: 0,
            user: user as u32,
            period_days: period as i32,
            sid,
            anchor_at: anchor,
            next_charge_at: next,
            current_cycle: cycle as i32,
            last_charged_at: last,
            lines,
            first_order_id: 0,
        });
    }
    // Ids in creation order.
    out.sort_by_key(|s| s.anchor_at);
    for (i, s) in out.iter_mut().enumerate() {
        s.id = i as i64 + 1;
    }
    out
}

// ---- orders ---------------------------------------------------------------------------

fn orders(
    rng: &mut StdRng,
    one_time: usize,
    items: &[Item],
    users: &[User],
    subscriptions: &mut [Subscription],
    now: i64,
) -> Vec<Order> {
    let mut out = Vec::with_capacity(one_time + subscriptions.len());
    if !users.is_empty() && !items.is_empty() {
        // Best sellers sell more.
        let weights = Weighted::new(items.iter().map(|i| i.sales as u64 + 20));
        for _ in 0..one_time {
            let user = rng.random_range(0..users.len());
            let from = (now - 365 * DAY).max(users[user].created_at + 600);
            let to = (now - HOUR).max(from);
            let t = rng.random_range(from..=to);
            let n = line_count(rng, items.len());
            let lines = pick_items(rng, n, items, &weights, |i| i.exists_at(t));
            out.push(Order {
                id: 0,
                user: user as u32,
                subscription_id: None,
                period_days: None,
                lines,
                created_at: t,
                paid_at: t + rng.random_range(20..=600),
            });
        }
    }
    // The first order of each subscription, paid at its anchor.
    for s in subscriptions.iter() {
        out.push(Order {
            id: 0,
            user: s.user,
            subscription_id: Some(s.id),
            period_days: Some(s.period_days),
            lines: s.lines.clone(),
            // Created within the half hour before: its items existed an hour before.
            created_at: s.anchor_at - rng.random_range(60..=1_800),
            paid_at: s.anchor_at,
        });
    }
    // Ids in creation order (stable sort: ties keep generation order).
    out.sort_by_key(|o| o.created_at);
    for (i, o) in out.iter_mut().enumerate() {
        o.id = i as i64 + 1;
        if let Some(sub) = o.subscription_id {
            subscriptions[(sub - 1) as usize].first_order_id = o.id;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_claim_classifies_as_declared() {
        for family in words::FAMILIES {
            for (claim, expected) in family.claims {
                let mut got: Vec<&str> = classify(claim).into_iter().map(|c| c.as_str()).collect();
                let mut want: Vec<&str> = expected.to_vec();
                got.sort_unstable();
                want.sort_unstable();
                assert_eq!(got, want, "{claim}");
            }
        }
    }

    #[test]
    fn every_category_gets_items() {
        let data = generate(
            7,
            Sizes {
                items: 2_000,
                users: 50,
                orders: 100,
                subscriptions: 20,
            },
            1_800_000_000,
        );
        for c in billing::items::Category::ALL {
            let n = data
                .items
                .iter()
                .filter(|i| i.categories.contains(&c.as_str()))
                .count();
            assert!(n > 20, "{} has {n} items", c.as_str());
        }
        assert!(data.items.iter().any(|i| i.categories.len() > 1));
    }

    #[test]
    fn same_seed_same_data() {
        let sizes = Sizes {
            items: 300,
            users: 100,
            orders: 500,
            subscriptions: 100,
        };
        let a = format!("{:?}", generate(42, sizes, 1_800_000_000));
        let b = format!("{:?}", generate(42, sizes, 1_800_000_000));
        let c = format!("{:?}", generate(43, sizes, 1_800_000_000));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn users_are_valid_and_unique() {
        let users = users(&mut stream(1, STREAM_USERS), 2_000, 1_800_000_000);
        let mut names = BTreeSet::new();
        let mut phones = BTreeSet::new();
        for u in &users {
            assert!(billing::validate::display_name(&u.display_name).is_ok());
            assert!(billing::validate::real_name(&u.real_name).is_ok());
            assert_eq!(
                billing::validate::normalize_phone(&u.phone).as_deref(),
                Some(u.phone.as_str())
            );
            assert!(names.insert(u.display_name.clone()));
            assert!(phones.insert(u.phone.clone()));
        }
    }

    #[test]
    fn subscriptions_are_due_in_the_next_30_days() {
        let now = 1_800_000_000;
        let data = generate(
            5,
            Sizes {
                items: 500,
                users: 200,
                orders: 400,
                subscriptions: 300,
            },
            now,
        );
        for s in &data.subscriptions {
            assert!(s.next_charge_at > now && s.next_charge_at <= now + 31 * DAY);
            assert!(s.anchor_at < now && s.last_charged_at <= now);
            assert_eq!(
                s.last_charged_at,
                s.next_charge_at - i64::from(s.period_days) * DAY
            );
            assert_eq!(
                s.anchor_at,
                s.next_charge_at - i64::from(s.period_days * s.current_cycle) * DAY
            );
            assert!(!s.lines.is_empty() && s.lines.len() <= 3);
            assert_eq!(s.sid.len(), 20);
            let first = &data.orders[(s.first_order_id - 1) as usize];
            assert_eq!(first.subscription_id, Some(s.id));
        }
        assert_eq!(data.orders.len(), 400);
        assert!(data
            .orders
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at));
    }

    #[test]
    fn charge_slots_are_two_am_seoul() {
        // 2026-11-24 00:00 UTC = 09:00 KST; the last slot is 2026-11-23 17:00 UTC.
        let now = 1_795_478_400;
        assert_eq!(last_charge_slot(now), now - 7 * HOUR);
        assert_eq!(last_charge_slot(now - 7 * HOUR), now - 7 * HOUR);
    }

    #[test]
    fn thousands_separator() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
