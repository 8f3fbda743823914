//! Input rules shared by every account path (signup, profile edits, social completion),
//! and the shape of the URL tokens the PG returns and recovery links carry.

use crate::error::FieldError;

/// Collects field errors so one response can name every rejected field.
#[derive(Debug, Default)]
pub struct Checks(pub Vec<FieldError>);

impl Checks {
    pub fn check(&mut self, field: &str, result: Result<(), &'static str>) {
        if let Err(reason) = result {
            self.0.push(FieldError::new(field, reason));
        }
    }

    pub fn finish(self) -> Result<(), crate::Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(crate::Error::Validation(self.0))
        }
    }
}

/// Whether `token` could be one of our URL tokens (a payment's, a checkout's, a recovery
/// link's: URL-safe base64, at most 100 characters). Anything else is no row's, and is
/// answered as not found before any query (a NUL byte would fail in Postgres).
pub fn plausible_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 100
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn required(value: &str) -> Result<(), &'static str> {
    if value.trim().is_empty() {
        Err("is required")
    } else {
        Ok(())
    }
}

/// A pragmatic address check: one `@`, a dotted domain, no spaces, RFC 5321 lengths.
pub fn email(value: &str) -> Result<(), &'static str> {
    required(value)?;
    let Some((local, domain)) = value.split_once('@') else {
        return Err("must be an e-mail address");
    };
    let ok = value.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err("must be an e-mail address")
    }
}

pub fn normalize_email(value: &str) -> String {
    value.trim().to_lowercase()
}

/// 8–64 characters with at least one letter, one digit and one symbol.
pub fn password(value: &str) -> Result<(), &'static str> {
    let len = value.chars().count();
    if !(8..=64).contains(&len) {
        return Err("must be 8 to 64 characters");
    }
    let letter = value.chars().any(char::is_alphabetic);
    let digit = value.chars().any(|c| c.is_ascii_digit());
    let symbol = value
        .chars()
        .any(|c| !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control());
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    if letter && digit && symbol {
        Ok(())
    } else {
        Err("must contain a letter, a digit and a symbol")
    }
}

/// Korean mobile numbers: `01[016789]-?\d{3,4}-?\d{4}`.
pub fn phone(value: &str) -> Result<(), &'static str> {
    normalize_phone(value)
        .map(|_| ())
        .ok_or("must be a Korean mobile number like 010-1234-5678")
}

/// The digits of a valid Korean mobile number, which is what is stored and compared.
pub fn normalize_phone(value: &str) -> Option<String> {
    let v = value.trim();
    let parts: Vec<&str> = v.split('-').collect();
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (head, mid, tail) = match parts.as_slice() {
        [whole] if all_digits(whole) && (10..=11).contains(&whole.len()) => (
            &whole[..3],
            &whole[3..whole.len() - 4],
            &whole[whole.len() - 4..],
        ),
        [head, rest] if all_digits(head) && all_digits(rest) && head.len() == 3 => {
            if !(7..=8).contains(&rest.len()) {
                return None;
            }
            (*head, &rest[..rest.len() - 4], &rest[rest.len() - 4..])
        }
        [head, mid, tail] if all_digits(head) && all_digits(mid) && all_digits(tail) => {
            (*head, *mid, *tail)
        }
        _ => return None,
    };
    let valid_head = head.len() == 3
        && head.starts_with("01")
        && matches!(head.as_bytes()[2], b'0' | b'1' | b'6' | b'7' | b'8' | b'9');
    if valid_head && (3..=4).contains(&mid.len()) && tail.len() == 4 {
        Some(format!("{head}{mid}{tail}"))
    } else {
        None
    }
}

/// Stored digits back to the usual dashed form.
pub fn format_phone(digits: &str) -> String {
    if digits.len() >= 10 && digits.is_ascii() {
        let (head, rest) = digits.split_at(3);
        let (mid, tail) = rest.split_at(rest.len() - 4);
        format!("{head}-{mid}-{tail}")
    } else {
        digits.to_owned()
    }
}

pub fn real_name(value: &str) -> Result<(), &'static str> {
    required(value)?;
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces");
    }
    if value.chars().count() > 50 {
        return Err("must be at most 50 characters");
    }
    Ok(())
}

pub fn display_name(value: &str) -> Result<(), &'static str> {
    let len = value.chars().count();
    if value.trim() != value || value.chars().any(char::is_control) {
        return Err("must not start or end with spaces");
    }
    if (2..=20).contains(&len) {
        Ok(())
    } else {
        Err("must be 2 to 20 characters")
    }
}

pub fn text(value: &str, max: usize) -> Result<(), &'static str> {
    required(value)?;
    if value.chars().count() > max {
        return Err("is too long");
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err("must not contain control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_url_safe_base64_up_to_100_characters() {
        let cases = [
            ("6Yh_-Zq09", true),
            ("", false),
            ("a\0b", false),
            ("a b", false),
            ("a%00b", false),
            ("토큰", false),
            (&"a".repeat(100), true),
            (&"a".repeat(101), false),
        ];
        for (token, ok) in cases {
            assert_eq!(plausible_token(token), ok, "{token:?}");
        }
    }

    #[test]
    fn phones() {
        let table = [
            ("010-1234-5678", Some("01012345678")),
            ("01012345678", Some("01012345678")),
            ("011-123-4567", Some("0111234567")),
            ("0161234567", Some("0161234567")),
            ("019-1234-5678", Some("01912345678")),
            ("010-12345678", Some("01012345678")),
            ("012-1234-5678", None),
            ("02-123-4567", None),
            ("010-12-5678", None),
            ("010-12345-678", None),
            ("010 1234 5678", None),
            ("", None),
            ("0101234567a", None),
        ];
        for (input, want) in table {
            assert_eq!(normalize_phone(input).as_deref(), want, "{input}");
        }
        assert_eq!(format_phone("01012345678"), "010-1234-5678");
        assert_eq!(format_phone("0111234567"), "011-123-4567");
    }

    #[test]
    fn passwords() {
        let table = [
            ("Abcdef1!", true),
            ("abcdefg1", false),
            ("abcdefg!", false),
            ("1234567!", false),
            ("Ab1!", false),
            ("한글비밀번호1!", true),
        ];
        for (input, ok) in table {
            assert_eq!(password(input).is_ok(), ok, "{input}");
        }
        assert!(password(&format!("a1!{}", "x".repeat(62))).is_err());
        assert!(password(&format!("a1!{}", "x".repeat(61))).is_ok());
    }

    #[test]
    fn emails_and_names() {
        assert!(email("a@b.co").is_ok());
        for bad in ["", "a", "a@b", "@b.co", "a@b..co", "a b@c.co", "a@@b.co"] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert!(real_name("홍길동").is_ok());
        assert!(real_name("홍 길동").is_err());
        assert!(display_name("a").is_err());
        assert!(display_name("ab").is_ok());
        assert!(display_name(&"가".repeat(20)).is_ok());
        assert!(display_name(&"가".repeat(21)).is_err());
        assert!(display_name(" ab").is_err());
    }
}
