//! Rows in COPY's text format, streamed to the server in chunks.

use sqlx::PgConnection;

/// Bytes buffered before a chunk goes to the server.
const CHUNK: usize = 1 << 20;

/// One COPY text-format buffer: tab-separated fields, `\N` for NULL, backslash escapes.
pub struct Rows {
    buf: String,
    at_row_start: bool,
}

impl Rows {
    fn new() -> Self {
        Self {
            buf: String::with_capacity(CHUNK + 64 * 1024),
            at_row_start: true,
        }
    }

    fn sep(&mut self) {
        if !self.at_row_start {
            self.buf.push('\t');
        }
        self.at_row_start = false;
    }

    pub fn text(&mut self, s: &str) -> &mut Self {
        self.sep();
        for c in s.chars() {
            match c {
                '\\' => self.buf.push_str("\\\\"),
                '\t' => self.buf.push_str("\\t"),
                '\n' => self.buf.push_str("\\n"),
                '\r' => self.buf.push_str("\\r"),
                c => self.buf.push(c),
            }
        }
        self
    }

    pub fn int(&mut self, v: i64) -> &mut Self {
        self.sep();
        push_int(&mut self.buf, v);
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.sep();
        self.buf.push_str("\\N");
        self
    }

    pub fn opt_int(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.int(v),
            None => self.null(),
        }
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.sep();
        self.buf.push(if v { 't' } else { 'f' });
        self
    }

    /// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS+00`.
    pub fn ts(&mut self, secs: i64) -> &mut Self {
        self.sep();
        push_timestamp(&mut self.buf, secs);
        self
    }

    pub fn opt_ts(&mut self, secs: Option<i64>) -> &mut Self {
        match secs {
            Some(s) => self.ts(s),
            None => self.null(),
        }
    }

    /// A text[] of plain words (no quoting needed): `{EYE,BONE}`.
    pub fn words(&mut self, words: &[&str]) -> &mut Self {
        self.sep();
        self.buf.push('{');
        for (i, w) in words.iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            self.buf.push_str(w);
        }
        self.buf.push('}');
        self
    }

    pub fn end(&mut self) {
        self.buf.push('\n');
        self.at_row_start = true;
    }
}

fn push_int(buf: &mut String, v: i64) {
    use std::fmt::Write;
    let _ = write!(buf, "{v}");
}

fn push2(buf: &mut String, v: i64) {
    buf.push(char::from(b'0' + (v / 10) as u8));
    buf.push(char::from(b'0' + (v % 10) as u8));
}

/// Civil date from days since 1970-01-01 (H. Hinnant's algorithm): integer-only, fast.
pub fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn push_timestamp(buf: &mut String, secs: i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    push_int(buf, y);
    buf.push('-');
    push2(buf, m);
    buf.push('-');
    push2(buf, d);
    buf.push(' ');
    push2(buf, rem / 3_600);
    buf.push(':');
    push2(buf, rem % 3_600 / 60);
    buf.push(':');
    push2(buf, rem % 60);
    buf.push_str("+00");
}

/// `COPY <statement> FROM STDIN` with one row per element of `rows`, written by `write`
/// and sent in ~1 MiB chunks. Returns the server's row count.
pub async fn copy_in<T>(
    conn: &mut PgConnection,
    statement: &str,
    rows: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut Rows, T),
) -> anyhow::Result<u64> {
    let mut copy = conn.copy_in_raw(statement).await?;
    let mut out = Rows::new();
    for row in rows {
        write(&mut out, row);
        if out.buf.len() >= CHUNK {
            copy.send(out.buf.as_bytes()).await?;
            out.buf.clear();
        }
    }
    if !out.buf.is_empty() {
        copy.send(out.buf.as_bytes()).await?;
    }
    Ok(copy.finish().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let mut s = String::new();
        push_timestamp(&mut s, 0);
        assert_eq!(s, "1970-01-01 00:00:00+00");
        s.clear();
        // 2026-11-24 00:00:00 UTC
        push_timestamp(&mut s, 1_795_478_400);
        assert_eq!(s, "2026-11-24 00:00:00+00");
        s.clear();
        push_timestamp(&mut s, 951_827_696); // 2000-02-29 12:34:56
        assert_eq!(s, "2000-02-29 12:34:56+00");
    }

    #[test]
    fn escapes_and_nulls() {
        let mut r = Rows::new();
        r.text("a\tb\\c\nd")
            .null()
            .int(-5)
            .bool(true)
            .words(&["EYE", "BONE"]);
        r.end();
        assert_eq!(r.buf, "a\\tb\\\\c\\nd\t\\N\t-5\tt\t{EYE,BONE}\n");
    }
}
