//! JSON as event-ruler reads it: objects keep their keys in document order (duplicates
//! included), and numbers keep the text they were written with. `serde_json::Value` has
//! neither: its objects are sorted maps and its numbers are parsed, and both matter to
//! matching (a key named twice in a pattern, `0.10000000000000001` against `0.1`).

use serde_json::Value;

/// Deeper nesting than this is refused, as serde_json refuses it, so that a hostile record
/// cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Json>),
    /// Keys in document order; a key may appear more than once.
    Object(Vec<(String, Json)>),
}

/// A JSON number as event-ruler compares it: as a double when a double holds exactly the
/// number written, else only by its text (`0.10000000000000001`, `12345678901234567891` and
/// `1e400` match only the same text). Two numbers of the same text are of the same kind, so
/// the text of a double is never needed, and equality is event-ruler's: `5` equals `5.0`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Number {
    Double(f64),
    Text(Box<str>),
}

impl Number {
    pub(crate) fn new(text: &str) -> Number {
        match double_of(text) {
            Some(value) => Number::Double(value),
            None => Number::Text(text.into()),
        }
    }
}

/// The value of `text` as an `f64`, if the double nearest to it has exactly its decimal value
/// (as `BigDecimal.valueOf(double)` sees the double: its shortest round-trip decimal form).
fn double_of(text: &str) -> Option<f64> {
    let value: f64 = text.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    // The usual number needs no formatting: one of at most 15 significant digits (spacing
    // wider than a double's precision) in the normal range is the shortest form of its double.
    if !text.contains(['e', 'E']) && (value.is_normal() || value == 0.0) {
        let significant = text
            .bytes()
            .filter(u8::is_ascii_digit)
            .skip_while(|&b| b == b'0')
            .count();
        if significant <= 15 {
            return Some(value);
        }
    }
    // The shortest form is at most 24 bytes (`-1.2345678901234567e-308`).
    let mut buffer = [0u8; 32];
    let mut cursor = &mut buffer[..];
    std::io::Write::write_fmt(&mut cursor, format_args!("{value:e}")).ok()?;
    let written = 32 - cursor.len();
    let shortest = std::str::from_utf8(&buffer[..written]).ok()?;
    (Decimal::parse(text)? == Decimal::parse(shortest)?).then_some(value)
}

/// A decimal number written in JSON's syntax, compared by value without allocating.
struct Decimal<'a> {
    negative: bool,
    /// The integer and fraction digits, one after the other.
    int: &'a str,
    frac: &'a str,
    exponent: i64,
}

impl<'a> Decimal<'a> {
    fn parse(text: &'a str) -> Option<Decimal<'a>> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits = int.bytes().chain(frac.bytes());
        (!int.is_empty() && digits.clone().all(|b| b.is_ascii_digit())).then_some(Decimal {
            negative,
            int,
            frac,
            exponent,
        })
    }

    /// The significant digits (no leading or trailing zeros) and the power of ten of the last
    /// one; no digits for zero.
    fn significant(&self) -> Option<(impl Iterator<Item = u8> + '_, i64)> {
        let digits = || self.int.bytes().chain(self.frac.bytes());
        let total = self.int.len() + self.frac.len();
        let leading = digits().take_while(|&b| b == b'0').count();
        let trailing = if leading == total {
            0
        } else {
            self.frac
                .bytes()
                .rev()
                .chain(self.int.bytes().rev())
                .take_while(|&b| b == b'0')
                .count()
        };
        let last = self
            .exponent
            .checked_sub(i64::try_from(self.frac.len()).ok()?)?
            .checked_add(i64::try_from(trailing).ok()?)?;
        Some((
            digits().skip(leading).take(total - leading - trailing),
            last,
        ))
    }
}

impl PartialEq for Decimal<'_> {
    fn eq(&self, other: &Self) -> bool {
        let (Some((mut a, a_last)), Some((mut b, b_last))) =
            (self.significant(), other.significant())
        else {
            return false;
        };
        match (a.next(), b.next()) {
            (None, None) => true,
            (Some(x), Some(y)) => {
                x == y && self.negative == other.negative && a_last == b_last && a.eq(b)
            }
            _ => false,
        }
    }
}

impl Json {
    /// Parse JSON text. The text is checked by serde_json first, so errors read as usual.
    pub(crate) fn parse(text: &str) -> serde_json::Result<Json> {
        serde_json::from_str::<serde::de::IgnoredAny>(text)?;
        Json::read_valid(text).ok_or_else(|| serde::de::Error::custom("nesting too deep"))
    }

    /// Read text that serde_json has already accepted as JSON; `None` for nesting deeper than
    /// serde_json allows.
    pub(crate) fn read_valid(text: &str) -> Option<Json> {
        Reader { text, pos: 0 }.value(0)
    }

    /// The value of a `serde_json::Value`, whose numbers are written as serde_json writes them.
    pub(crate) fn from_value(value: &Value) -> Json {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(Number::new(&n.to_string())),
            Value::String(s) => Json::String(s.clone()),
            Value::Array(items) => Json::Array(items.iter().map(Json::from_value).collect()),
            Value::Object(map) => Json::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Json::from_value(v)))
                    .collect(),
            ),
        }
    }

    /// As a `serde_json::Value` (a key named twice keeps its last value).
    #[cfg(test)]
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(Number::Text(text)) => serde_json::from_str(text).unwrap_or(Value::Null),
            // An integral double reads back as the integer it was most likely written as.
            Json::Number(Number::Double(value)) if value.fract() == 0.0 && value.abs() < 9e15 => {
                Value::from(*value as i64)
            }
            Json::Number(Number::Double(value)) => Value::from(*value),
            Json::String(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect(),
            ),
        }
    }

    pub(crate) fn is_string(&self) -> bool {
        matches!(self, Json::String(_))
    }
}

/// Reads JSON text that serde_json has already accepted; `None` only for nesting deeper than
/// [`MAX_DEPTH`] (or text that is not JSON after all).
struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl Reader<'_> {
    fn skip_space(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start_matches([' ', '\t', '\n', '\r']).len();
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.text.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => {
                self.pos += 1;
                let mut entries = Vec::new();
                if !self.eat(b'}') {
                    loop {
                        self.skip_space();
                        let key = self.string()?;
                        if !self.eat(b':') {
                            return None;
                        }
                        entries.push((key, self.value(depth + 1)?));
                        if !self.eat(b',') {
                            break;
                        }
                    }
                    if !self.eat(b'}') {
                        return None;
                    }
                }
                Some(Json::Object(entries))
            }
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                if !self.eat(b']') {
                    loop {
                        items.push(self.value(depth + 1)?);
                        if !self.eat(b',') {
                            break;
                        }
                    }
                    if !self.eat(b']') {
                        return None;
                    }
                }
                Some(Json::Array(items))
            }
            b'"' => self.string().map(Json::String),
            b't' => self.word("true", Json::Bool(true)),
            b'f' => self.word("false", Json::Bool(false)),
            b'n' => self.word("null", Json::Null),
            _ => {
                let rest = &self.text[self.pos..];
                let len = rest
                    .find(|c: char| !matches!(c, '0'..='9' | '-' | '+' | '.' | 'e' | 'E'))
                    .unwrap_or(rest.len());
                self.pos += len;
                (len > 0).then(|| Json::Number(Number::new(&rest[..len])))
            }
        }
    }

    fn word(&mut self, word: &str, value: Json) -> Option<Json> {
        self.text[self.pos..].starts_with(word).then(|| {
            self.pos += word.len();
            value
        })
    }

    /// A string literal at the current position (after its opening quote is checked).
    fn string(&mut self) -> Option<String> {
        let rest = self.text.get(self.pos..)?.strip_prefix('"')?;
        let end = string_end(rest)?;
        self.pos += end + 2;
        let literal = &rest[..end];
        if !literal.contains('\\') {
            return Some(literal.to_owned());
        }
        serde_json::from_str(&self.text[self.pos - end - 2..self.pos]).ok()
    }
}

/// Length of a string literal's body (up to its closing quote), escapes included.
fn string_end(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some(i),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_order_duplicates_and_number_text() {
        let json = Json::parse(r#"{"b": 1.50, "a": [true, null], "b": "x\u00e9\"y"}"#).unwrap();
        let Json::Object(entries) = json else {
            panic!("an object")
        };
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a", "b"]);
        assert_eq!(entries[0].1, Json::Number(Number::Double(1.5)));
        assert_eq!(entries[2].1, Json::String("xé\"y".into()));
    }

    #[test]
    fn numbers_are_doubles_when_a_double_holds_them_exactly() {
        for text in [
            "0",
            "-0",
            "5",
            "5.0",
            "50e-1",
            "0.1",
            "1e300",
            "9007199254740992",
            "2.5e-3",
            "100E-2",
            "0.000",
            "12.5",
            "123456789012345",
            "0.000000000000001",
            "100000000000000000000",
        ] {
            assert!(matches!(Number::new(text), Number::Double(_)), "{text}");
        }
        for text in [
            "0.10000000000000001",
            "12345678901234567891",
            "9007199254740993",
            "1e400",
            "1e-400",
            "1234567890123456789",
            "0.1000000000000000055511151231257827",
        ] {
            assert!(matches!(Number::new(text), Number::Text(_)), "{text}");
        }
        assert_eq!(Number::new("5"), Number::new("5.000"));
        assert_ne!(Number::new("0.1"), Number::new("0.10000000000000001"));
        assert_eq!(Number::new("1e400"), Number::new("1e400"));
        assert_ne!(Number::new("1e400"), Number::new("1E400"));
    }

    #[test]
    fn refuses_nesting_deeper_than_serde_json_does() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(Json::parse(&deep).is_err());
    }
}
