//! Pattern text to compiled rules, as event-ruler's `JsonRuleCompiler` compiles it: a pattern
//! becomes one or more rules (one per combination of `$or` branches), each a set of field
//! paths (`a.b`, whether written nested or with a dotted key) with the values allowed there.

use super::json::{Json, Number};
use super::{DataKeys, FilterError, invalid};
use crate::api::SourceKind;

/// `$or` combinations a pattern may expand to.
const MAX_RULES: usize = 1024;

/// Fields one rule (one combination of `$or` branches) may name: matching tracks them in a
/// `u64`.
pub(crate) const MAX_FIELDS: usize = 64;

const OPERATORS: &str =
    "prefix, suffix, equals-ignore-case, exactly, wildcard, numeric, exists, anything-but, cidr";

/// All of a rule's fields must match.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    pub(crate) fields: Vec<FieldRule>,
    /// Indexes of `fields` in path order, the order event-ruler takes them in.
    pub(crate) order: Vec<usize>,
    /// Does an `exists: false` field come after (in path order) a field that needs a value?
    /// event-ruler takes fields in path order and checks an absence only against the values
    /// taken so far: `{"b": {"a": ["K"], "c": [{"exists": false}]}}` matches
    /// `{"b": [{"a": "K"}, {"c": 2}]}` (no `c` beside that `a`), while
    /// `{"b": {"c": [{"exists": false}], "d": [2]}}` does not match
    /// `{"b": [{"c": 1}, {"d": 2}]}` (a `c` exists). Without one, every absence is about the
    /// whole record, and matching can take the fields in any order.
    pub(crate) absence_after_values: bool,
}

/// The values a rule allows at one path of the record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldRule {
    /// Keys from the top of the record, joined with `.`.
    pub(crate) path: String,
    /// Set under a data key (`body`, `data`, `dynamodb`): Lambda's format check applies.
    pub(crate) data: Option<DataFormat>,
    /// Any of these (never empty).
    pub(crate) matchers: Vec<Matcher>,
}

impl FieldRule {
    /// Does `exists: false` let this field match a record without a value at its path?
    pub(crate) fn allows_absence(&self) -> bool {
        self.matchers.contains(&Matcher::Exists(false))
    }

    /// Is `exists: false` all there is to this field?
    pub(crate) fn only_absence(&self) -> bool {
        self.matchers.iter().all(|m| *m == Matcher::Exists(false))
    }
}

/// What the pattern expects a data field to hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum DataFormat {
    /// `"body": [...]`: a plain (non-JSON) body.
    Plain,
    /// `"body": {...}`: a JSON body.
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Matcher {
    Str(String),
    /// A string literal that is an IP address matches the same address however written.
    Ip(IpAddress),
    Num(Number),
    Bool(bool),
    Null,
    Prefix(String),
    Suffix(String),
    PrefixIgnoreCase(CaseVariants),
    SuffixIgnoreCase(CaseVariants),
    EqualsIgnoreCase(CaseVariants),
    Wildcard(Wildcard),
    Numeric(NumericRange),
    Exists(bool),
    AnythingBut(AnythingBut),
    Cidr(IpRange),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AnythingBut {
    Strings(Vec<String>),
    Numbers(Vec<Number>),
    Prefixes(Vec<String>),
    Suffixes(Vec<String>),
    IgnoreCase(Vec<CaseVariants>),
    Wildcards(Vec<Wildcard>),
}

/// An ignore-case string as event-ruler matches it: each character of the pattern stands for
/// its lower-case or its upper-case form (which may be longer: `ß` is `ß` or `SS`). Only the
/// pattern is case-mapped, so `ß` matches `SS` but `SS` does not match `ß`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CaseVariants {
    /// Per character of the pattern: its lower-case and upper-case forms (equal for
    /// characters without case).
    pub(crate) chars: Vec<[Box<str>; 2]>,
}

impl CaseVariants {
    fn new(s: &str) -> CaseVariants {
        CaseVariants {
            chars: s
                .chars()
                .map(|c| [c.to_lowercase().collect(), c.to_uppercase().collect()])
                .collect(),
        }
    }
}

/// `numeric`: `=` is a range whose bounds are equal and inclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NumericRange {
    pub(crate) lower: Option<Bound>,
    pub(crate) upper: Option<Bound>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bound {
    pub(crate) value: f64,
    pub(crate) inclusive: bool,
}

/// `wildcard`: literal segments separated by `*` (there is one more segment than stars).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Wildcard {
    pub(crate) segments: Vec<String>,
}

/// An IPv4 (4 bytes) or IPv6 (16 bytes) address; IPv4-mapped IPv6 addresses are IPv4, as
/// Java's `InetAddress` reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum IpAddress {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// `cidr`: the addresses of a block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct IpRange {
    pub(crate) low: IpAddress,
    pub(crate) high: IpAddress,
}

impl IpAddress {
    /// An IP address literal as event-ruler recognizes one: four dot-separated decimal parts
    /// (leading zeros allowed), or hexadecimal groups and colons (no embedded IPv4).
    pub(crate) fn parse(s: &str) -> Option<IpAddress> {
        if s.contains(':') {
            if !s.bytes().all(|b| b == b':' || b.is_ascii_hexdigit()) {
                return None;
            }
            let addr: std::net::Ipv6Addr = s.parse().ok()?;
            return Some(match addr.to_ipv4_mapped() {
                Some(v4) => IpAddress::V4(v4.octets()),
                None => IpAddress::V6(addr.octets()),
            });
        }
        // Java reads at most 15 characters as an IPv4 literal; longer text is a host name.
        if s.len() > 15 {
            return None;
        }
        let mut octets = [0u8; 4];
        let mut parts = s.split('.');
        for octet in &mut octets {
            let part = parts.next()?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *octet = part.parse().ok()?;
        }
        parts.next().is_none().then_some(IpAddress::V4(octets))
    }
}

impl IpRange {
    /// `address/bits`, with event-ruler's limits: fewer than 32 bits for IPv4, fewer than 128
    /// for IPv6.
    fn parse(s: &str, path: &str) -> Result<IpRange, FilterError> {
        let bad = |why: &str| invalid(path, format!("cidr: {why}: \"{s}\""));
        let (address, bits) = s
            .split_once('/')
            .filter(|(_, bits)| !bits.contains('/') && !bits.is_empty())
            .ok_or_else(|| bad("one '/' between an address and the mask bits is required"))?;
        let bits: i32 = bits
            .parse()
            .map_err(|_| bad("the mask bits must be an integer"))?;
        let given = IpAddress::parse(address).ok_or_else(|| bad("not an IP address"))?;
        let mut bytes = [0u8; 16];
        let len = match given {
            IpAddress::V4(b) => {
                bytes[..4].copy_from_slice(&b);
                4
            }
            IpAddress::V6(b) => {
                bytes = b;
                16
            }
        };
        let max_bits = 8 * len as i32 - 1;
        if !(0..=max_bits).contains(&bits) {
            return Err(bad(&format!("the mask bits must be 0 to {max_bits}")));
        }
        let (mut low_bytes, mut high_bytes) = (bytes, bytes);
        let mut host_bits = 8 * len as i32 - bits;
        for (low, high) in low_bytes[..len]
            .iter_mut()
            .zip(&mut high_bytes[..len])
            .rev()
        {
            let host_mask = match host_bits {
                8.. => 0xff,
                1..=7 => (1u8 << host_bits) - 1,
                _ => 0,
            };
            *low &= !host_mask;
            *high |= host_mask;
            host_bits -= 8;
        }
        let address = |bytes: [u8; 16]| match given {
            IpAddress::V4(_) => IpAddress::V4([bytes[0], bytes[1], bytes[2], bytes[3]]),
            IpAddress::V6(_) => IpAddress::V6(bytes),
        };
        Ok(IpRange {
            low: address(low_bytes),
            high: address(high_bytes),
        })
    }
}

/// Compile pattern text (already known to be a JSON object).
pub(crate) fn compile(pattern: &Json, keys: DataKeys) -> Result<Vec<Rule>, FilterError> {
    let Json::Object(entries) = pattern else {
        return Err(invalid(
            "",
            "a pattern must be a JSON object such as {\"body\": {\"field\": [\"value\"]}}",
        ));
    };
    let mut rules = vec![Rule {
        fields: Vec::new(),
        order: Vec::new(),
        absence_after_values: false,
    }];
    Compiler { keys }.object(entries, "", "", None, true, &mut rules)?;
    for rule in &mut rules {
        rule.order = (0..rule.fields.len()).collect();
        rule.order
            .sort_by(|&a, &b| rule.fields[a].path.cmp(&rule.fields[b].path));
        let mut values_before = false;
        for &i in &rule.order {
            let field = &rule.fields[i];
            rule.absence_after_values |= values_before && field.allows_absence();
            values_before |= !field.only_absence();
        }
    }
    if let Some(rule) = rules.iter().find(|r| r.fields.len() > MAX_FIELDS) {
        return Err(invalid(
            "",
            format!(
                "a pattern (one combination of $or branches) may name at most {MAX_FIELDS} fields, this one names {}",
                rule.fields.len()
            ),
        ));
    }
    Ok(rules)
}

struct Compiler {
    keys: DataKeys,
}

impl Compiler {
    /// Add an object level of the pattern to every rule, in document order: a later mention of
    /// a path replaces an earlier one, and `$or` turns every rule into one per branch.
    /// `prefix` is the record path so far, `here` the pattern path for messages.
    fn object(
        &self,
        entries: &[(String, Json)],
        prefix: &str,
        here: &str,
        data: Option<DataFormat>,
        top: bool,
        rules: &mut Vec<Rule>,
    ) -> Result<(), FilterError> {
        if entries.is_empty() {
            let what = if here.is_empty() {
                "an empty pattern is not allowed (leave filterCriteria out to match everything)"
            } else {
                "empty objects are not allowed"
            };
            return Err(invalid(here, what));
        }
        for (key, value) in entries {
            let pattern_path = join(here, key);
            if key == "$or"
                && let Json::Array(branches) = value
                && matches!(branches.first(), Some(Json::Object(_)))
            {
                self.or(branches, prefix, &pattern_path, data, top, rules)?;
                continue;
            }
            let path = join(prefix, key);
            let data = data.or_else(|| {
                (top && self.keys.is_data_key(key)).then_some(match value {
                    Json::Array(_) => DataFormat::Plain,
                    _ => DataFormat::Json,
                })
            });
            match value {
                Json::Object(inner) => {
                    self.object(inner, &path, &pattern_path, data, false, rules)?
                }
                Json::Array(items) => {
                    if top
                        && let DataKeys::Source(
                            kind @ (SourceKind::Kinesis | SourceKind::DynamoDBStreams),
                        ) = self.keys
                        && self.keys.is_data_key(key)
                    {
                        return Err(invalid(
                            &pattern_path,
                            format!(
                                "{kind} data is filtered as JSON: the pattern for {key} must be an object of fields, e.g. {{\"{key}\": {{\"field\": [\"value\"]}}}}"
                            ),
                        ));
                    }
                    let field = FieldRule {
                        path,
                        data,
                        matchers: leaf(items, &pattern_path)?,
                    };
                    for rule in rules.iter_mut() {
                        rule.set(field.clone());
                    }
                }
                other => {
                    return Err(invalid(
                        &pattern_path,
                        format!(
                            "must be an object (to match nested fields) or an array of values and operators, got {}",
                            kind_of(other)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn or(
        &self,
        branches: &[Json],
        prefix: &str,
        here: &str,
        data: Option<DataFormat>,
        top: bool,
        rules: &mut Vec<Rule>,
    ) -> Result<(), FilterError> {
        const WANT: &str = "$or must be an array of at least two objects";
        if branches.len() < 2 {
            return Err(invalid(here, WANT));
        }
        let mut expanded = Vec::new();
        for (i, branch) in branches.iter().enumerate() {
            let branch_path = format!("{here}[{i}]");
            let Json::Object(entries) = branch else {
                return Err(invalid(
                    &branch_path,
                    format!("{WANT}, got {} in it", kind_of(branch)),
                ));
            };
            let mut copies = rules.clone();
            self.object(entries, prefix, &branch_path, data, top, &mut copies)?;
            expanded.extend(copies);
            if expanded.len() > MAX_RULES {
                return Err(invalid(
                    here,
                    format!(
                        "the pattern expands to more than {MAX_RULES} combinations of $or branches"
                    ),
                ));
            }
        }
        *rules = expanded;
        Ok(())
    }
}

impl Rule {
    /// Add a field, replacing the one at the same path.
    fn set(&mut self, field: FieldRule) {
        match self.fields.iter_mut().find(|f| f.path == field.path) {
            Some(existing) => *existing = field,
            None => self.fields.push(field),
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn kind_of(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn leaf(items: &[Json], path: &str) -> Result<Vec<Matcher>, FilterError> {
    if items.is_empty() {
        return Err(invalid(
            path,
            "empty arrays are not allowed (list at least one value or operator)",
        ));
    }
    items
        .iter()
        .map(|item| match item {
            Json::String(s) => Ok(string_literal(s)),
            Json::Number(n) => Ok(Matcher::Num(n.clone())),
            Json::Bool(b) => Ok(Matcher::Bool(*b)),
            Json::Null => Ok(Matcher::Null),
            Json::Object(op) => operator(op, path),
            Json::Array(_) => Err(invalid(
                path,
                "values must be strings, numbers, true, false, null or operator objects, not arrays",
            )),
        })
        .collect()
}

fn string_literal(s: &str) -> Matcher {
    match IpAddress::parse(s) {
        Some(ip) => Matcher::Ip(ip),
        None => Matcher::Str(s.to_owned()),
    }
}

fn operator(op: &[(String, Json)], path: &str) -> Result<Matcher, FilterError> {
    let [(name, arg)] = op else {
        return Err(invalid(
            path,
            format!(
                "an operator object holds exactly one operator ({OPERATORS}), got {} keys",
                op.len()
            ),
        ));
    };
    let string_arg = |what: &str| -> Result<&str, FilterError> {
        match arg {
            Json::String(s) => Ok(s),
            other => Err(invalid(
                path,
                format!("{what} must be a string, got {}", kind_of(other)),
            )),
        }
    };
    Ok(match name.as_str() {
        "prefix" | "suffix" => {
            let is_prefix = name == "prefix";
            if let Json::Object(inner) = arg {
                let variants = ignore_case_arg(inner, path, name)?;
                return Ok(if is_prefix {
                    Matcher::PrefixIgnoreCase(variants)
                } else {
                    Matcher::SuffixIgnoreCase(variants)
                });
            }
            let s = string_arg(&format!("{name} (or {{\"equals-ignore-case\": \"...\"}})"))?;
            if is_prefix {
                Matcher::Prefix(s.to_owned())
            } else {
                Matcher::Suffix(s.to_owned())
            }
        }
        "equals-ignore-case" => Matcher::EqualsIgnoreCase(CaseVariants::new(string_arg(name)?)),
        "exactly" => Matcher::Str(string_arg(name)?.to_owned()),
        "equals" => {
            return Err(invalid(
                path,
                "unknown operator \"equals\": event-ruler (and so Lambda) names it \"exactly\"",
            ));
        }
        "wildcard" => Matcher::Wildcard(Wildcard::parse(string_arg(name)?, path)?),
        "exists" => match arg {
            Json::Bool(b) => Matcher::Exists(*b),
            other => {
                return Err(invalid(
                    path,
                    format!("exists must be true or false, got {}", kind_of(other)),
                ));
            }
        },
        "numeric" => Matcher::Numeric(NumericRange::parse(arg, path)?),
        "anything-but" => Matcher::AnythingBut(AnythingBut::parse(arg, path)?),
        "cidr" => Matcher::Cidr(IpRange::parse(string_arg(name)?, path)?),
        other => {
            return Err(invalid(
                path,
                format!("unknown operator \"{other}\" (supported: {OPERATORS})"),
            ));
        }
    })
}

/// `{"equals-ignore-case": "..."}` inside `prefix` / `suffix`.
fn ignore_case_arg(
    inner: &[(String, Json)],
    path: &str,
    outer: &str,
) -> Result<CaseVariants, FilterError> {
    match inner {
        [(name, Json::String(s))] if name == "equals-ignore-case" => Ok(CaseVariants::new(s)),
        _ => Err(invalid(
            path,
            format!("{outer} takes a string or {{\"equals-ignore-case\": \"...\"}}"),
        )),
    }
}

/// A number that event-ruler can compare (see [`Number`]).
fn comparable_number(v: &Json, path: &str, what: &str) -> Result<f64, FilterError> {
    match v {
        Json::Number(Number::Double(value)) => Ok(*value),
        Json::Number(Number::Text(text)) => Err(invalid(
            path,
            format!(
                "{what}: {text} cannot be compared exactly (event-ruler compares numbers as doubles)"
            ),
        )),
        other => Err(invalid(
            path,
            format!("{what} must be a number, got {}", kind_of(other)),
        )),
    }
}

impl NumericRange {
    fn parse(arg: &Json, path: &str) -> Result<NumericRange, FilterError> {
        const PAIRS: &str =
            "numeric needs pairs of operator and number, e.g. [\">\", 0, \"<=\", 5]";
        let Json::Array(items) = arg else {
            return Err(invalid(path, PAIRS));
        };
        if items.is_empty() || items.len() % 2 != 0 {
            return Err(invalid(path, PAIRS));
        }
        if items.len() > 4 {
            return Err(invalid(
                path,
                "numeric takes at most two comparisons (a lower and an upper bound)",
            ));
        }
        let mut pairs = Vec::with_capacity(2);
        for pair in items.chunks(2) {
            let Json::String(op) = &pair[0] else {
                return Err(invalid(path, PAIRS));
            };
            if !matches!(op.as_str(), "=" | ">" | ">=" | "<" | "<=") {
                return Err(invalid(
                    path,
                    format!("numeric: unknown operator \"{op}\" (use =, >, >=, <, <=)"),
                ));
            }
            let value = comparable_number(
                &pair[1],
                path,
                &format!("numeric: the value after \"{op}\""),
            )?;
            pairs.push((op.as_str(), value));
        }
        let bound = |(op, value): (&str, f64)| Bound {
            value,
            inclusive: op.len() == 2 || op == "=",
        };
        let range = match pairs.as_slice() {
            [("=", v)] => NumericRange {
                lower: Some(bound(("=", *v))),
                upper: Some(bound(("=", *v))),
            },
            [(op @ (">" | ">="), v)] => NumericRange {
                lower: Some(bound((op, *v))),
                upper: None,
            },
            [(op, v)] => NumericRange {
                lower: None,
                upper: Some(bound((op, *v))),
            },
            [(lo @ (">" | ">="), lv), (hi @ ("<" | "<="), hv)] => NumericRange {
                lower: Some(bound((lo, *lv))),
                upper: Some(bound((hi, *hv))),
            },
            _ => {
                return Err(invalid(
                    path,
                    "numeric: a range is a lower bound (> or >=) followed by an upper bound (< or <=); = stands alone",
                ));
            }
        };
        // event-ruler refuses a range whose bounds are equal, even [">=", 5, "<=", 5] (use
        // ["=", 5]).
        if let (Some(lo), Some(hi)) = (range.lower, range.upper)
            && pairs.len() == 2
            && lo.value >= hi.value
        {
            return Err(invalid(
                path,
                format!(
                    "numeric: the lower bound {} must be less than the upper bound {}",
                    lo.value, hi.value
                ),
            ));
        }
        Ok(range)
    }
}

impl AnythingBut {
    fn parse(arg: &Json, path: &str) -> Result<AnythingBut, FilterError> {
        const WANT: &str = "anything-but takes a string, a number, a list of strings or of numbers, or an object with prefix, suffix, equals-ignore-case or wildcard";
        const WHAT: &str = "anything-but";
        match arg {
            Json::String(s) => Ok(AnythingBut::Strings(vec![s.clone()])),
            Json::Number(_) => Ok(AnythingBut::Numbers(vec![number_of(arg, path)?])),
            Json::Array(items) => {
                if items.is_empty() {
                    return Err(invalid(path, "anything-but: the list is empty"));
                }
                if items.iter().all(Json::is_string) {
                    Ok(AnythingBut::Strings(strings_of(items)))
                } else if items.iter().all(|i| matches!(i, Json::Number(_))) {
                    Ok(AnythingBut::Numbers(
                        items
                            .iter()
                            .map(|i| number_of(i, path))
                            .collect::<Result<_, _>>()?,
                    ))
                } else {
                    Err(invalid(
                        path,
                        format!(
                            "{WHAT}: list all strings or all numbers (no mixing, no null, booleans or objects)"
                        ),
                    ))
                }
            }
            Json::Object(inner) => {
                let [(op, values)] = inner.as_slice() else {
                    return Err(invalid(path, WANT));
                };
                if !matches!(
                    op.as_str(),
                    "prefix" | "suffix" | "equals-ignore-case" | "wildcard"
                ) {
                    return Err(invalid(
                        path,
                        format!(
                            "{WHAT}: unsupported operator \"{op}\" (use prefix, suffix, equals-ignore-case or wildcard)"
                        ),
                    ));
                }
                let strings = match values {
                    Json::String(s) => vec![s.clone()],
                    Json::Array(items)
                        if !items.is_empty() && items.iter().all(Json::is_string) =>
                    {
                        strings_of(items)
                    }
                    _ => {
                        return Err(invalid(
                            path,
                            format!("{WHAT}: {op} takes a string or a non-empty list of strings"),
                        ));
                    }
                };
                match op.as_str() {
                    "prefix" | "suffix" => {
                        if strings.iter().any(String::is_empty) {
                            return Err(invalid(
                                path,
                                format!("{WHAT}: an empty {op} is not allowed"),
                            ));
                        }
                        Ok(if op == "prefix" {
                            AnythingBut::Prefixes(strings)
                        } else {
                            AnythingBut::Suffixes(strings)
                        })
                    }
                    "equals-ignore-case" => Ok(AnythingBut::IgnoreCase(
                        strings.iter().map(|s| CaseVariants::new(s)).collect(),
                    )),
                    _ => Ok(AnythingBut::Wildcards(
                        strings
                            .iter()
                            .map(|s| Wildcard::parse(s, path))
                            .collect::<Result<_, _>>()?,
                    )),
                }
            }
            other => Err(invalid(path, format!("{WANT}, got {}", kind_of(other)))),
        }
    }
}

fn strings_of(items: &[Json]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            Json::String(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// A number of `anything-but`, which event-ruler must be able to compare.
fn number_of(v: &Json, path: &str) -> Result<Number, FilterError> {
    comparable_number(v, path, "anything-but")?;
    match v {
        Json::Number(n) => Ok(n.clone()),
        other => Err(invalid(
            path,
            format!("anything-but: expected a number, got {}", kind_of(other)),
        )),
    }
}

impl Wildcard {
    /// `*` matches any run of characters; `\*` is a literal star and `\\` a backslash; other
    /// escapes and consecutive stars are refused (as event-ruler's `WildcardParser` does).
    fn parse(text: &str, path: &str) -> Result<Wildcard, FilterError> {
        let mut segments = vec![String::new()];
        let mut chars = text.char_indices().peekable();
        while let Some((pos, c)) = chars.next() {
            let segment = match c {
                '*' => {
                    if matches!(chars.peek(), Some((_, '*'))) {
                        return Err(invalid(
                            path,
                            format!("wildcard: consecutive wildcard characters at position {pos}"),
                        ));
                    }
                    segments.push(String::new());
                    continue;
                }
                '\\' => match chars.next() {
                    Some((_, e @ ('*' | '\\'))) => e,
                    _ => {
                        return Err(invalid(
                            path,
                            format!(
                                "wildcard: invalid escape character at position {pos} (only \\* and \\\\ are escapes)"
                            ),
                        ));
                    }
                },
                c => c,
            };
            if let Some(last) = segments.last_mut() {
                last.push(segment);
            }
        }
        Ok(Wildcard { segments })
    }
}
