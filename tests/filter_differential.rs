//! Differential test of filter patterns (SPEC §7): the project's matcher against AWS's
//! event-ruler, the engine behind Lambda's `FilterCriteria`, over a corpus this test generates
//! (hand-written cases per operator, then seeded random patterns and events).
//!
//! event-ruler runs in one JVM for the whole corpus (hack/filter-oracle/FilterOracle.java,
//! installed by hack/install-filter-oracle.sh, which hack/test.sh runs). The test fails on any
//! case where the two disagree — one refuses the pattern and the other does not, or both accept
//! it and answer differently — unless the case is in [`ALLOWED`], the short list of deliberate
//! differences, each with a minimal case and its reason (also in docs/lambda-migration.md).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use esm_operator::filter::Pattern;

/// A deliberate difference from event-ruler (a Lambda limit or a named event-ruler defect):
/// the cases it applies to are not compared.
struct Allowed {
    name: &'static str,
    /// A minimal case (pattern, event) that shows the difference.
    example: (&'static str, &'static str),
    /// Does a case fall under this entry?
    applies: fn(&str, &str) -> bool,
    why: &'static str,
}

const ALLOWED: &[Allowed] = &[
    Allowed {
        name: "pattern length",
        example: (r#"{"a": ["<4100 characters>"]}"#, r#"{"a": "x"}"#),
        applies: |pattern, _| pattern.chars().count() > esm_operator::filter::MAX_PATTERN_CHARS,
        why: "Lambda's API refuses a pattern longer than 4096 characters; event-ruler has no limit",
    },
    Allowed {
        name: "ignore-case outside the Basic Multilingual Plane",
        example: (r#"{"a": [{"equals-ignore-case": "😀"}]}"#, r#"{"a": "😀"}"#),
        applies: |pattern, _| {
            pattern.contains("equals-ignore-case") && pattern.chars().any(|c| u32::from(c) > 0xFFFF)
        },
        why: "event-ruler case-maps a pattern one UTF-16 unit at a time, so a character outside \
              the BMP becomes \"??\": it never matches itself and matches \"??\" instead (an \
              event-ruler defect; the project matches the character's own case forms)",
    },
    Allowed {
        name: "cidr across address families",
        example: (r#"{"a": [{"cidr": "10.0.0.0/8"}]}"#, r#"{"a": "a00::1"}"#),
        applies: |pattern, event| {
            cidr_across_families(pattern, event)
                || pattern.replace(' ', "").contains("/0\"}")
                || (pattern.contains("\"cidr\"") && has_number_beyond_doubles(pattern))
        },
        why: "event-ruler compares the hexadecimal text of addresses, so an IPv4 block can match \
              IPv6 addresses whose first 32 bits fall in it, a short IPv6 block IPv4 \
              addresses, and a /0 block numbers too; and a number no double holds, beside a \
              block, no longer matches itself (an event-ruler defect; the project matches \
              addresses of the block's own family only)",
    },
    Allowed {
        name: "wildcard beside ignore-case, numeric or non-ASCII suffix operators",
        example: (
            r#"{"a": [{"wildcard": "*o"}, {"equals-ignore-case": "k"}]}"#,
            r#"{"a": "xk"}"#,
        ),
        applies: |pattern, _| leaf_with_wildcard_beside_byte_machine_trouble(pattern),
        why: "event-ruler builds one byte machine per field; a wildcard there lets an \
              ignore-case operator or a multi-byte suffix beside it match values that none of \
              them matches (`xk` here; `{\"wildcard\": \"*o\"}` beside `{\"suffix\": \"é\"}` \
              matches `éx`), keeps an ignore-case anything-but from matching, and with a \
              numeric beside it keeps a literal from matching itself (`[\"x\", {\"numeric\": \
              [\"<\", 1]}, {\"wildcard\": \"f*\"}]` misses `\"x\"`; an event-ruler defect)",
    },
    Allowed {
        name: "dotted key beside an array at the same path",
        example: (
            r#"{"b": {"c": [1], "b": ["Foo"]}}"#,
            r#"{"b": [{"b": "Foo", "c": 2}], "b.c": 1}"#,
        ),
        applies: |_, event| {
            serde_json::from_str::<serde_json::Value>(event)
                .is_ok_and(|e| dotted_key_beside_array(&e))
        },
        why: "event-ruler treats a value reached through a dotted key (`\"b.c\": 1`) as if it were \
              in the array at the same path (`\"b\": [...]`), so it is not consistent with the \
              array's elements (an event-ruler defect; the value is in no array)",
    },
];

/// Does a leaf of the pattern hold a `wildcard` and, beside it, an ignore-case operator, a
/// `numeric`, or a `suffix` or `anything-but` with non-ASCII text?
fn leaf_with_wildcard_beside_byte_machine_trouble(pattern: &str) -> bool {
    fn walk(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::Object(map) => map.values().any(walk),
            serde_json::Value::Array(items) => {
                let text = |item: &serde_json::Value| item.to_string();
                items.iter().any(|i| text(i).starts_with("{\"wildcard\""))
                    && items.iter().any(|i| {
                        let t = text(i);
                        t.contains("equals-ignore-case")
                            || t.starts_with("{\"numeric\"")
                            || ((t.starts_with("{\"suffix\"")
                                || t.starts_with("{\"anything-but\""))
                                && !t.is_ascii())
                    })
                    || items.iter().any(walk)
            }
            _ => false,
        }
    }
    serde_json::from_str::<serde_json::Value>(pattern).is_ok_and(|p| walk(&p))
}

/// Does an object of the event have a key `x.y` beside a key `x` that holds an array?
fn dotted_key_beside_array(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Object(map) => {
            map.keys().any(|k| {
                k.split_once('.')
                    .is_some_and(|(head, _)| map.get(head).is_some_and(|v| v.is_array()))
            }) || map.values().any(dotted_key_beside_array)
        }
        serde_json::Value::Array(items) => items.iter().any(dotted_key_beside_array),
        _ => false,
    }
}

/// Does the pattern text hold a number literal that a double cannot hold exactly (more than
/// 15 significant digits, or an exponent of three digits)? Digits inside strings do not count.
fn has_number_beyond_doubles(pattern: &str) -> bool {
    let (mut in_string, mut escaped, mut digits, mut exponent) = (false, false, 0, None);
    for c in pattern.chars() {
        if in_string {
            (in_string, escaped) = (escaped || c != '"', !escaped && c == '\\');
            continue;
        }
        match c {
            '"' => in_string = true,
            '0'..='9' => match exponent.as_mut() {
                Some(n) => *n += 1,
                None => digits += 1,
            },
            '.' | '-' | '+' => {}
            'e' | 'E' => exponent = Some(0),
            _ => (digits, exponent) = (0, None),
        }
        if digits > 15 || exponent.is_some_and(|n| n >= 3) {
            return true;
        }
    }
    false
}

/// Does the pattern have a `cidr` block of one address family and the event an address of
/// the other?
fn cidr_across_families(pattern: &str, event: &str) -> bool {
    fn walk<'a>(v: &'a serde_json::Value, out: &mut Vec<(&'a str, &'a str)>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if let serde_json::Value::String(s) = v {
                        out.push((k, s));
                    }
                    walk(v, out);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    if let serde_json::Value::String(s) = item {
                        out.push(("", s));
                    }
                    walk(item, out);
                }
            }
            _ => {}
        }
    }
    let family = |s: &str| -> Option<bool> {
        let address = s.split('/').next().unwrap_or(s);
        if address.contains(':') && address.bytes().all(|b| b == b':' || b.is_ascii_hexdigit()) {
            Some(true)
        } else if address.split('.').count() == 4
            && address
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            Some(false)
        } else {
            None
        }
    };
    let (Ok(pattern), Ok(event)) = (
        serde_json::from_str::<serde_json::Value>(pattern),
        serde_json::from_str::<serde_json::Value>(event),
    ) else {
        return false;
    };
    let (mut blocks, mut values) = (Vec::new(), Vec::new());
    walk(&pattern, &mut blocks);
    walk(&event, &mut values);
    blocks
        .iter()
        .filter(|(k, _)| *k == "cidr")
        .filter_map(|(_, block)| family(block))
        .any(|v6| values.iter().any(|(_, s)| family(s) == Some(!v6)))
}

/// One question for both engines.
struct Case {
    pattern: String,
    event: String,
}

impl Case {
    fn new(pattern: impl Into<String>, event: impl Into<String>) -> Case {
        Case {
            pattern: pattern.into(),
            event: event.into(),
        }
    }
}

/// An engine's answer: does the pattern match, or is the pattern refused?
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Match(bool),
    Refused(String),
}

impl Answer {
    fn agrees(&self, other: &Answer) -> bool {
        match (self, other) {
            (Answer::Refused(_), Answer::Refused(_)) => true,
            (a, b) => a == b,
        }
    }
}

fn project_answer(case: &Case) -> Answer {
    match Pattern::parse(&case.pattern) {
        Ok(pattern) => Answer::Match(pattern.matches_json(&case.event)),
        Err(e) => Answer::Refused(e.to_string()),
    }
}

/// Where hack/install-filter-oracle.sh put the harness.
fn oracle_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ESM_FILTER_ORACLE") {
        return dir.into();
    }
    let cache = std::env::var_os("ESM_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("esm-operator"))
        })
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/esm-operator")))
        .expect("HOME is not set");
    cache.join("filter-oracle")
}

/// event-ruler's answers, in the order of `cases`, from one run of the harness.
fn oracle_answers(cases: &[Case]) -> Vec<Answer> {
    let dir = oracle_dir();
    let classes = dir.join("classes");
    assert!(
        classes.join("FilterOracle.class").is_file(),
        "the reference filter engine is not installed in {}: run hack/install-filter-oracle.sh \
         (hack/test.sh does), or point ESM_FILTER_ORACLE at its directory",
        dir.display()
    );
    let classpath = format!("{}:{}/*", classes.display(), dir.join("lib").display());
    let mut child = Command::new("java")
        .args(["-Xss8m", "-cp", &classpath, "FilterOracle"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot run `java` (a Java 17 JDK is needed; hack/test.sh checks for it)");
    let mut input = Vec::new();
    for case in cases {
        let line = serde_json::json!({"pattern": case.pattern, "event": case.event});
        serde_json::to_writer(&mut input, &line).expect("a JSON value serializes");
        input.push(b'\n');
    }
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("the harness runs");
    writer
        .join()
        .expect("the writer thread does not panic")
        .expect("the harness reads its input");
    assert!(
        output.status.success(),
        "the harness failed: {}",
        output.status
    );
    let text = String::from_utf8(output.stdout).expect("the harness writes UTF-8");
    let answers: Vec<Answer> = text
        .lines()
        .map(|line| match line {
            "true" => Answer::Match(true),
            "false" => Answer::Match(false),
            other => Answer::Refused(other.strip_prefix("error ").unwrap_or(other).to_owned()),
        })
        .collect();
    assert_eq!(answers.len(), cases.len(), "one answer per case");
    answers
}

#[test]
fn filters_agree_with_event_ruler() {
    let mut cases = hand_written_cases();
    let hand_written = cases.len();
    // The suite's corpus is fixed; other seeds and sizes explore (ESM_FILTER_SEED=...,
    // ESM_FILTER_CASES=...).
    let seed = env_number("ESM_FILTER_SEED").unwrap_or(0x5EED_F117_E125);
    let count = env_number("ESM_FILTER_CASES").map_or(2500, |n| n as usize);
    cases.extend(random_cases(seed, count));
    let oracle = oracle_answers(&cases);
    let mut disagreements = Vec::new();
    let mut allowed = vec![0usize; ALLOWED.len()];
    for (case, theirs) in cases.iter().zip(&oracle) {
        let ours = project_answer(case);
        if ours.agrees(theirs) {
            continue;
        }
        if let Some(i) = ALLOWED
            .iter()
            .position(|a| (a.applies)(&case.pattern, &case.event))
        {
            allowed[i] += 1;
            continue;
        }
        disagreements.push(format!(
            "pattern {}\n    event   {}\n    project {:?}\n    event-ruler {:?}",
            case.pattern, case.event, ours, theirs
        ));
    }
    for (entry, count) in ALLOWED.iter().zip(&allowed) {
        eprintln!(
            "allowed difference \"{}\" ({count} cases), e.g. {} on {}: {}",
            entry.name, entry.example.0, entry.example.1, entry.why
        );
    }
    eprintln!(
        "{} cases ({hand_written} hand-written), {} disagreements",
        cases.len(),
        disagreements.len()
    );
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree with event-ruler:\n  {}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n  ")
    );
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name} must be a number, got {text:?}")))
}

/// Every entry's example is a case of the entry, and does disagree (else it should go).
#[test]
fn allowed_differences_are_real() {
    let cases: Vec<Case> = ALLOWED
        .iter()
        .map(|a| Case::new(concrete(a.example.0), a.example.1))
        .collect();
    let oracle = oracle_answers(&cases);
    for ((entry, case), theirs) in ALLOWED.iter().zip(&cases).zip(&oracle) {
        assert!(
            (entry.applies)(&case.pattern, &case.event),
            "{}: the example is not covered by the entry",
            entry.name
        );
        assert!(
            !project_answer(case).agrees(theirs),
            "{}: the example agrees with event-ruler, so the entry is not needed",
            entry.name
        );
    }
}

/// An example pattern with its `<N characters>` placeholder filled in.
fn concrete(example: &str) -> String {
    match example.split_once('<') {
        Some((head, rest)) => {
            let (n, tail) = rest.split_once(" characters>").expect("placeholder");
            format!("{head}{}{tail}", "x".repeat(n.parse().expect("a count")))
        }
        None => example.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written cases: each operator's edges, and the families where the two engines used to
// differ.

fn hand_written_cases() -> Vec<Case> {
    // (pattern, events): every pattern is tried on every one of its events.
    let table: &[(&str, &[&str])] = &[
        // exact values, types, null and empty string
        (
            r#"{"a": ["x"]}"#,
            &[
                r#"{"a": "x"}"#,
                r#"{"a": "X"}"#,
                r#"{"a": ["y", "x"]}"#,
                r#"{"b": "x"}"#,
                r#"{"a": {"x": 1}}"#,
            ],
        ),
        (
            r#"{"a": [5]}"#,
            &[
                r#"{"a": 5}"#,
                r#"{"a": 5.0}"#,
                r#"{"a": 5e0}"#,
                r#"{"a": "5"}"#,
                r#"{"a": 50e-1}"#,
                r#"{"a": -5}"#,
            ],
        ),
        (
            r#"{"a": [true]}"#,
            &[r#"{"a": true}"#, r#"{"a": "true"}"#, r#"{"a": false}"#],
        ),
        (
            r#"{"a": [null]}"#,
            &[
                r#"{"a": null}"#,
                r#"{}"#,
                r#"{"a": "null"}"#,
                r#"{"a": [null]}"#,
            ],
        ),
        (
            r#"{"a": [""]}"#,
            &[r#"{"a": ""}"#, r#"{"a": null}"#, r#"{}"#],
        ),
        (
            r#"{"a": {"b": ["x"]}}"#,
            &[
                r#"{"a": {"b": "x"}}"#,
                r#"{"a": [{"b": "x"}]}"#,
                r#"{"a": "x"}"#,
                r#"{"a.b": "x"}"#,
            ],
        ),
        // numbers: exactness and ranges
        (
            r#"{"a": [12345678901234567890]}"#,
            &[
                r#"{"a": 12345678901234567890}"#,
                r#"{"a": 12345678901234567891}"#,
                r#"{"a": 1.2345678901234567e19}"#,
            ],
        ),
        (
            r#"{"a": [0.1]}"#,
            &[
                r#"{"a": 0.1}"#,
                r#"{"a": 0.10}"#,
                r#"{"a": 0.10000000000000001}"#,
                r#"{"a": 1e-1}"#,
            ],
        ),
        (
            r#"{"a": [0.10000000000000001]}"#,
            &[r#"{"a": 0.1}"#, r#"{"a": 0.10000000000000001}"#],
        ),
        (
            r#"{"a": [9007199254740993]}"#,
            &[r#"{"a": 9007199254740993}"#, r#"{"a": 9007199254740992}"#],
        ),
        (r#"{"a": [1e400]}"#, &[r#"{"a": 1e400}"#, r#"{"a": 1E400}"#]),
        (
            r#"{"a": [-0]}"#,
            &[r#"{"a": 0}"#, r#"{"a": -0}"#, r#"{"a": 0.0}"#],
        ),
        (
            r#"{"a": [{"numeric": ["=", 5]}]}"#,
            &[
                r#"{"a": 5}"#,
                r#"{"a": 5.000}"#,
                r#"{"a": "5"}"#,
                r#"{"a": 5.0000000000000001}"#,
            ],
        ),
        (
            r#"{"a": [{"numeric": [">", 0, "<=", 5]}]}"#,
            &[
                r#"{"a": 0}"#,
                r#"{"a": 5}"#,
                r#"{"a": 3.5}"#,
                r#"{"a": [7, 2]}"#,
                r#"{"a": 1e-300}"#,
            ],
        ),
        (
            r#"{"a": [{"numeric": [">=", 5, "<=", 5]}]}"#,
            &[r#"{"a": 5}"#],
        ),
        (
            r#"{"a": [{"numeric": [">", 5, "<", 5]}]}"#,
            &[r#"{"a": 5}"#],
        ),
        (
            r#"{"a": [{"numeric": [">", 1e300]}]}"#,
            &[r#"{"a": 1e301}"#, r#"{"a": 1e299}"#],
        ),
        (
            r#"{"a": [{"numeric": ["<", 0.10000000000000001]}]}"#,
            &[r#"{"a": 0}"#],
        ),
        (
            r#"{"a": [{"numeric": ["<", 10]}]}"#,
            &[
                r#"{"a": 12345678901234567891}"#,
                r#"{"a": -12345678901234567891}"#,
                r#"{"a": 9.5}"#,
            ],
        ),
        (
            r#"{"a": [{"numeric": [">", 5, ">", 6]}]}"#,
            &[r#"{"a": 7}"#],
        ),
        (
            r#"{"a": [{"numeric": ["<", 5, ">", 1]}]}"#,
            &[r#"{"a": 3}"#],
        ),
        // prefix, suffix, ignore-case and case folding
        (
            r#"{"a": [{"prefix": "ab"}]}"#,
            &[
                r#"{"a": "abc"}"#,
                r#"{"a": "ab"}"#,
                r#"{"a": "Abc"}"#,
                r#"{"a": 12}"#,
            ],
        ),
        (
            r#"{"a": [{"prefix": ""}]}"#,
            &[r#"{"a": ""}"#, r#"{"a": "x"}"#, r#"{"a": 1}"#],
        ),
        (
            r#"{"a": [{"suffix": "bc"}]}"#,
            &[r#"{"a": "abc"}"#, r#"{"a": "aBC"}"#],
        ),
        (
            r#"{"a": [{"prefix": {"equals-ignore-case": "AB"}}]}"#,
            &[r#"{"a": "abc"}"#, r#"{"a": "aBc"}"#, r#"{"a": "xab"}"#],
        ),
        (
            r#"{"a": [{"suffix": {"equals-ignore-case": "BC"}}]}"#,
            &[r#"{"a": "abc"}"#, r#"{"a": "ABc"}"#, r#"{"a": "bca"}"#],
        ),
        (
            r#"{"a": [{"equals-ignore-case": "ÉCOLE"}]}"#,
            &[r#"{"a": "école"}"#, r#"{"a": "ECOLE"}"#],
        ),
        (
            r#"{"a": [{"equals-ignore-case": "straße"}]}"#,
            &[
                r#"{"a": "STRASSE"}"#,
                r#"{"a": "straße"}"#,
                r#"{"a": "STRAßE"}"#,
                r#"{"a": "strasse"}"#,
            ],
        ),
        (
            r#"{"a": [{"equals-ignore-case": "STRASSE"}]}"#,
            &[r#"{"a": "straße"}"#],
        ),
        (
            r#"{"a": [{"equals-ignore-case": "ς"}]}"#,
            &[r#"{"a": "σ"}"#, r#"{"a": "Σ"}"#, r#"{"a": "ς"}"#],
        ),
        (
            r#"{"a": [{"equals-ignore-case": "σ"}]}"#,
            &[r#"{"a": "ς"}"#, r#"{"a": "Σ"}"#],
        ),
        (
            r#"{"a": [{"equals-ignore-case": "ǅ"}]}"#,
            &[r#"{"a": "ǆ"}"#, r#"{"a": "Ǆ"}"#, r#"{"a": "ǅ"}"#],
        ),
        (
            r#"{"a": [{"equals-ignore-case": "İ"}]}"#,
            &[r#"{"a": "i̇"}"#, r#"{"a": "i"}"#, r#"{"a": "İ"}"#],
        ),
        (
            r#"{"a": [{"equals-ignore-case": "K"}]}"#,
            &[r#"{"a": "K"}"#, r#"{"a": "k"}"#],
        ),
        (
            r#"{"a": [{"equals-ignore-case": "ﬃ"}]}"#,
            &[r#"{"a": "FFI"}"#, r#"{"a": "ﬃ"}"#, r#"{"a": "ffi"}"#],
        ),
        (
            r#"{"a": [{"prefix": {"equals-ignore-case": "ß"}}]}"#,
            &[r#"{"a": "SSx"}"#, r#"{"a": "ßx"}"#, r#"{"a": "sx"}"#],
        ),
        (
            r#"{"a": [{"suffix": {"equals-ignore-case": "ß"}}]}"#,
            &[r#"{"a": "xSS"}"#, r#"{"a": "xß"}"#],
        ),
        // exactly and equals
        (
            r#"{"a": [{"exactly": "x"}]}"#,
            &[r#"{"a": "x"}"#, r#"{"a": "X"}"#],
        ),
        (r#"{"a": [{"equals": "x"}]}"#, &[r#"{"a": "x"}"#]),
        (r#"{"a": [{"exactly": 5}]}"#, &[r#"{"a": 5}"#]),
        // wildcard
        (
            r#"{"a": [{"wildcard": "a*c"}]}"#,
            &[r#"{"a": "abc"}"#, r#"{"a": "ac"}"#, r#"{"a": "abd"}"#],
        ),
        (
            r#"{"a": [{"wildcard": "*"}]}"#,
            &[r#"{"a": ""}"#, r#"{"a": "x"}"#, r#"{"a": 1}"#],
        ),
        (
            r#"{"a": [{"wildcard": "a\\*c"}]}"#,
            &[r#"{"a": "a*c"}"#, r#"{"a": "abc"}"#],
        ),
        (r#"{"a": [{"wildcard": "a**c"}]}"#, &[r#"{"a": "abc"}"#]),
        (
            r#"{"a": [{"wildcard": "*b*b*"}]}"#,
            &[r#"{"a": "abab"}"#, r#"{"a": "ab"}"#],
        ),
        // exists
        (
            r#"{"a": [{"exists": true}]}"#,
            &[
                r#"{"a": 1}"#,
                r#"{"a": null}"#,
                r#"{"a": []}"#,
                r#"{"a": {}}"#,
                r#"{"a": {"b": 1}}"#,
                r#"{}"#,
                r#"{"a": [[1]]}"#,
            ],
        ),
        (
            r#"{"a": [{"exists": false}]}"#,
            &[
                r#"{"a": 1}"#,
                r#"{"a": null}"#,
                r#"{"a": []}"#,
                r#"{"a": {}}"#,
                r#"{"a": {"b": 1}}"#,
                r#"{}"#,
            ],
        ),
        (
            r#"{"a": {"b": [{"exists": false}]}}"#,
            &[
                r#"{"a": [{"b": 1}, {"c": 2}]}"#,
                r#"{"a": [{"c": 2}]}"#,
                r#"{"a": 5}"#,
                r#"{}"#,
            ],
        ),
        (
            r#"{"a": {"b": [{"exists": false}], "c": [2]}}"#,
            &[
                r#"{"a": [{"b": 1}, {"c": 2}]}"#,
                r#"{"a": [{"c": 2}]}"#,
                r#"{"a": {"c": 2}}"#,
            ],
        ),
        (
            r#"{"a": [{"exists": false}, 5]}"#,
            &[r#"{"a": 5}"#, r#"{"a": 6}"#, r#"{}"#],
        ),
        // anything-but
        (
            r#"{"a": [{"anything-but": "x"}]}"#,
            &[
                r#"{"a": "x"}"#,
                r#"{"a": "y"}"#,
                r#"{"a": 1}"#,
                r#"{"a": null}"#,
                r#"{}"#,
                r#"{"a": ["x", "y"]}"#,
                r#"{"a": ["x"]}"#,
            ],
        ),
        (
            r#"{"a": [{"anything-but": [1, 2]}]}"#,
            &[
                r#"{"a": 1}"#,
                r#"{"a": 1.0}"#,
                r#"{"a": 3}"#,
                r#"{"a": "1"}"#,
            ],
        ),
        (
            r#"{"a": [{"anything-but": {"prefix": "ab"}}]}"#,
            &[r#"{"a": "abc"}"#, r#"{"a": "xabc"}"#, r#"{"a": 5}"#],
        ),
        (
            r#"{"a": [{"anything-but": {"suffix": "bc"}}]}"#,
            &[r#"{"a": "abc"}"#, r#"{"a": "abcx"}"#],
        ),
        (
            r#"{"a": [{"anything-but": {"equals-ignore-case": ["AB", "É"]}}]}"#,
            &[r#"{"a": "ab"}"#, r#"{"a": "é"}"#, r#"{"a": "abc"}"#],
        ),
        (
            r#"{"a": [{"anything-but": {"wildcard": "a*"}}]}"#,
            &[r#"{"a": "abc"}"#, r#"{"a": "bc"}"#],
        ),
        (r#"{"a": [{"anything-but": []}]}"#, &[r#"{"a": "x"}"#]),
        (
            r#"{"a": [{"anything-but": {"prefix": ""}}]}"#,
            &[r#"{"a": "x"}"#],
        ),
        // cidr and IP addresses
        (
            r#"{"a": [{"cidr": "10.0.0.0/24"}]}"#,
            &[
                r#"{"a": "10.0.0.7"}"#,
                r#"{"a": "10.0.1.7"}"#,
                r#"{"a": "10.0.0.007"}"#,
                r#"{"a": 10}"#,
                r#"{"a": ["x", "10.0.0.1"]}"#,
            ],
        ),
        (
            r#"{"a": [{"cidr": "10.0.0.7/30"}]}"#,
            &[r#"{"a": "10.0.0.4"}"#, r#"{"a": "10.0.0.7"}"#],
        ),
        (
            r#"{"a": [{"cidr": "10.0.0.7/24"}]}"#,
            &[r#"{"a": "10.0.0.3"}"#, r#"{"a": "10.0.0.8"}"#],
        ),
        (
            r#"{"a": [{"cidr": "10.0.0.0/32"}]}"#,
            &[r#"{"a": "10.0.0.0"}"#],
        ),
        (
            r#"{"a": [{"cidr": "0.0.0.0/0"}]}"#,
            &[r#"{"a": "255.255.255.255"}"#, r#"{"a": "::1"}"#],
        ),
        (
            r#"{"a": [{"cidr": "2001:db8::/32"}]}"#,
            &[
                r#"{"a": "2001:db8::1"}"#,
                r#"{"a": "2001:DB8:0::1"}"#,
                r#"{"a": "2001:db9::1"}"#,
                r#"{"a": "32.1.13.184"}"#,
            ],
        ),
        (
            r#"{"a": [{"cidr": "::/0"}]}"#,
            &[r#"{"a": "::"}"#, r#"{"a": "10.0.0.1"}"#],
        ),
        (r#"{"a": [{"cidr": "::1/128"}]}"#, &[r#"{"a": "::1"}"#]),
        (
            r#"{"a": [{"cidr": "10.0.0.0/8/8"}]}"#,
            &[r#"{"a": "10.0.0.1"}"#],
        ),
        (
            r#"{"a": [{"cidr": "10.0.0/8"}]}"#,
            &[r#"{"a": "10.0.0.1"}"#],
        ),
        (
            r#"{"a": [{"cidr": "10.0.0.0/-1"}]}"#,
            &[r#"{"a": "10.0.0.1"}"#],
        ),
        (r#"{"a": [{"cidr": 10}]}"#, &[r#"{"a": "10.0.0.1"}"#]),
        (
            r#"{"a": ["10.0.0.1"]}"#,
            &[
                r#"{"a": "10.0.0.1"}"#,
                r#"{"a": "10.000.0.1"}"#,
                r#"{"a": "10.0.0.01"}"#,
                r#"{"a": "10.0.0.2"}"#,
                r#"{"a": "::ffff:a00:1"}"#,
            ],
        ),
        (
            r#"{"a": ["::1"]}"#,
            &[
                r#"{"a": "0:0::1"}"#,
                r#"{"a": "0:0:0:0:0:0:0:1"}"#,
                r#"{"a": "::2"}"#,
                r#"{"a": "::1"}"#,
            ],
        ),
        (r#"{"a": ["2001:DB8::A"]}"#, &[r#"{"a": "2001:db8::a"}"#]),
        (
            r#"{"a": [{"anything-but": "10.0.0.1"}]}"#,
            &[r#"{"a": "10.00.0.1"}"#, r#"{"a": "10.0.0.2"}"#],
        ),
        (
            r#"{"a": [{"prefix": "10.0.0.1"}]}"#,
            &[r#"{"a": "10.00.0.1"}"#, r#"{"a": "10.0.0.1"}"#],
        ),
        // a path named twice: later mentions replace earlier ones, $or branches included
        (
            r#"{"a": [1], "$or": [{"a": [2]}, {"b": [3]}]}"#,
            &[
                r#"{"a": 1, "b": 3}"#,
                r#"{"a": 2, "b": 0}"#,
                r#"{"a": 1, "b": 0}"#,
            ],
        ),
        (
            r#"{"$or": [{"a": [2]}, {"b": [3]}], "a": [1]}"#,
            &[r#"{"a": 1, "b": 0}"#, r#"{"a": 2, "b": 0}"#],
        ),
        (
            r#"{"a": {"b": [1]}, "a.b": [2]}"#,
            &[r#"{"a": {"b": 1}}"#, r#"{"a": {"b": 2}}"#],
        ),
        (
            r#"{"a.b": [2], "a": {"b": [1]}}"#,
            &[r#"{"a": {"b": 1}}"#, r#"{"a": {"b": 2}}"#],
        ),
        (
            r#"{"a": {"b": [1], "c": [1]}, "a.b": [2]}"#,
            &[r#"{"a": {"b": 2, "c": 1}}"#, r#"{"a": {"b": 1, "c": 1}}"#],
        ),
        (r#"{"a": [1], "a": [2]}"#, &[r#"{"a": 1}"#, r#"{"a": 2}"#]),
        (
            r#"{"$or": [{"a": [1]}, {"a": [2]}]}"#,
            &[r#"{"a": 2}"#, r#"{"a": 3}"#],
        ),
        (
            r#"{"$or": [{"a": [1]}, {"$or": [{"b": [2]}, {"c": [3]}]}]}"#,
            &[r#"{"c": 3}"#, r#"{"b": 1}"#],
        ),
        (
            r#"{"a": {"$or": [{"b": [1]}, {"c": [2]}]}}"#,
            &[r#"{"a": {"c": 2}}"#, r#"{"a": [{"b": 0}, {"c": 2}]}"#],
        ),
        (r#"{"$or": [{"a": [1]}]}"#, &[r#"{"a": 1}"#]),
        // keys containing "."
        (
            r#"{"a.b": [1]}"#,
            &[
                r#"{"a": {"b": 1}}"#,
                r#"{"a.b": 1}"#,
                r#"{"a": [{"b": 1}]}"#,
                r#"{"a": {"b.c": 1}}"#,
            ],
        ),
        (
            r#"{"a": {"b.c": [1]}}"#,
            &[
                r#"{"a": {"b": {"c": 1}}}"#,
                r#"{"a.b": {"c": 1}}"#,
                r#"{"a.b.c": 1}"#,
            ],
        ),
        (
            r#"{"a": {"b": [1], "c": [2]}}"#,
            &[r#"{"a.b": 1, "a": {"c": 2}}"#, r#"{"a.b": 1, "a.c": 2}"#],
        ),
        // arrays of objects: one element must hold all of an object's fields
        (
            r#"{"a": {"b": [1], "c": [2]}}"#,
            &[
                r#"{"a": [{"b": 1}, {"c": 2}]}"#,
                r#"{"a": [{"b": 1, "c": 2}]}"#,
                r#"{"a": [[{"b": 1, "c": 2}]]}"#,
                r#"{"a": [{"b": [1, 3], "c": 2}]}"#,
            ],
        ),
        (
            r#"{"x": [1], "y": [2]}"#,
            &[r#"{"x": [1, 3], "y": [0, 2]}"#],
        ),
        (
            r#"{"a": {"b": [1]}, "c": [2]}"#,
            &[r#"{"a": [{"b": 1}], "c": [2, 3]}"#],
        ),
        // characters outside the Basic Multilingual Plane
        (r#"{"a": ["😀"]}"#, &[r#"{"a": "😀"}"#]),
        (r#"{"a": [{"prefix": "😀"}]}"#, &[r#"{"a": "😀x"}"#]),
        (r#"{"a": [{"suffix": "😀"}]}"#, &[r#"{"a": "x😀"}"#]),
        (r#"{"a": [{"wildcard": "*😀*"}]}"#, &[r#"{"a": "x😀y"}"#]),
        (
            r#"{"a": [{"equals-ignore-case": "😀"}]}"#,
            &[r#"{"a": "😀"}"#, r#"{"a": "??"}"#],
        ),
        (
            r#"{"a": [{"equals-ignore-case": "𐐀"}]}"#,
            &[r#"{"a": "𐐨"}"#, r#"{"a": "𐐀"}"#],
        ),
        (r#"{"a": [{"anything-but": "😀"}]}"#, &[r#"{"a": "😀"}"#]),
        // invalid patterns
        (r#"{}"#, &[r#"{}"#]),
        (r#"{"a": []}"#, &[r#"{"a": 1}"#]),
        (r#"{"a": {}}"#, &[r#"{"a": 1}"#]),
        (r#"{"a": 1}"#, &[r#"{"a": 1}"#]),
        (r#"{"a": [[1]]}"#, &[r#"{"a": 1}"#]),
        (r#"{"a": [{"unknown": 1}]}"#, &[r#"{"a": 1}"#]),
        (r#"{"a": [{"prefix": 1}]}"#, &[r#"{"a": 1}"#]),
        (
            r#"{"a": [{"prefix": "a", "suffix": "b"}]}"#,
            &[r#"{"a": "ab"}"#],
        ),
        (r#"[1]"#, &[r#"{"a": 1}"#]),
        (r#"{"a": [1]"#, &[r#"{"a": 1}"#]),
    ];
    table
        .iter()
        .flat_map(|(pattern, events)| events.iter().map(move |event| Case::new(*pattern, *event)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Random cases: seeded, so a failure is reproducible; events are built from their pattern so
// that a good share of them match.

/// xorshift64*: small, fast and good enough to pick from lists.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const KEYS: &[&str] = &["a", "b", "c", "a.b", "b.c"];
const STRINGS: &[&str] = &[
    "",
    "x",
    "foo",
    "Foo",
    "FOO",
    "foobar",
    "barfoo",
    "f*o",
    "10.0.0.1",
    "10.0.0.01",
    "10.0.1.9",
    "::1",
    "0::1",
    "2001:db8::1",
    "2001:DB8::1",
    "école",
    "ÉCOLE",
    "straße",
    "STRASSE",
    "σ",
    "ς",
    "Σ",
    "ǅ",
    "ǆ",
    "İ",
    "i̇",
    "😀",
    "a😀",
    "K",
    "k",
];
/// Number texts: how a number is written matters to event-ruler.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "1.0",
    "1e2",
    "100",
    "5",
    "5.5",
    "-3",
    "0.1",
    "0.10000000000000001",
    "12345678901234567890",
    "12345678901234567891",
    "1e300",
    "9007199254740993",
    "2.5e-3",
];
const WILDCARDS: &[&str] = &["*", "f*", "*o", "f*o", "*oo*", "\\\\*", "F*", "*😀", "1*"];
const CIDRS: &[&str] = &[
    "10.0.0.0/8",
    "10.0.0.0/24",
    "10.0.0.1/31",
    "0.0.0.0/0",
    "2001:db8::/32",
    "::/0",
    "::1/127",
];

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn string_or_list(rng: &mut Rng, pool: &[&str]) -> String {
    if rng.chance(70) {
        json_string(rng.pick(pool))
    } else {
        let items: Vec<String> = (0..1 + rng.below(3))
            .map(|_| json_string(rng.pick(pool)))
            .collect();
        format!("[{}]", items.join(", "))
    }
}

/// One element of a leaf array: a literal or an operator.
fn random_matcher(rng: &mut Rng) -> String {
    match rng.below(16) {
        0 | 1 => json_string(rng.pick(STRINGS)),
        2 | 3 => rng.pick(NUMBERS).to_string(),
        4 => rng.pick(&["true", "false", "null"]).to_string(),
        5 => format!(r#"{{"prefix": {}}}"#, json_string(rng.pick(STRINGS))),
        6 => format!(r#"{{"suffix": {}}}"#, json_string(rng.pick(STRINGS))),
        7 => format!(
            r#"{{"{}": {{"equals-ignore-case": {}}}}}"#,
            rng.pick(&["prefix", "suffix"]),
            json_string(rng.pick(STRINGS))
        ),
        8 => format!(
            r#"{{"equals-ignore-case": {}}}"#,
            json_string(rng.pick(STRINGS))
        ),
        9 => format!(r#"{{"wildcard": {}}}"#, json_string(rng.pick(WILDCARDS))),
        10 => {
            let op = rng.pick(&["=", ">", ">=", "<", "<="]);
            let value = rng.pick(NUMBERS);
            if rng.chance(40) && op.starts_with('>') {
                let upper = rng.pick(NUMBERS);
                format!(
                    r#"{{"numeric": ["{op}", {value}, "{}", {upper}]}}"#,
                    rng.pick(&["<", "<="])
                )
            } else {
                format!(r#"{{"numeric": ["{op}", {value}]}}"#)
            }
        }
        11 => format!(r#"{{"exists": {}}}"#, rng.chance(50)),
        12 => format!(r#"{{"anything-but": {}}}"#, string_or_list(rng, STRINGS)),
        13 => format!(r#"{{"anything-but": {}}}"#, rng.pick(NUMBERS)),
        14 => format!(
            r#"{{"anything-but": {{"{}": {}}}}}"#,
            rng.pick(&["prefix", "suffix", "equals-ignore-case", "wildcard"]),
            json_string(rng.pick(STRINGS))
        ),
        _ => format!(r#"{{"cidr": {}}}"#, json_string(rng.pick(CIDRS))),
    }
}

fn random_object_pattern(rng: &mut Rng, depth: usize) -> String {
    let mut fields = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let key = rng.pick(KEYS);
        let value = if depth < 2 && rng.chance(30) {
            random_object_pattern(rng, depth + 1)
        } else {
            let items: Vec<String> = (0..1 + rng.below(3)).map(|_| random_matcher(rng)).collect();
            format!("[{}]", items.join(", "))
        };
        fields.push(format!("{}: {value}", json_string(key)));
    }
    if depth < 2 && rng.chance(15) {
        let branches: Vec<String> = (0..2)
            .map(|_| random_object_pattern(rng, depth + 1))
            .collect();
        fields.push(format!(r#""$or": [{}]"#, branches.join(", ")));
    }
    format!("{{{}}}", fields.join(", "))
}

/// A leaf value of an event, often close to what the pattern names.
fn random_scalar(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=4 => json_string(rng.pick(STRINGS)),
        5..=8 => rng.pick(NUMBERS).to_string(),
        _ => rng.pick(&["true", "false", "null"]).to_string(),
    }
}

fn random_value(rng: &mut Rng, depth: usize) -> String {
    match rng.below(10) {
        0..=5 => random_scalar(rng),
        6 | 7 if depth < 3 => random_event(rng, depth + 1),
        8 if depth < 3 => {
            let items: Vec<String> = (0..rng.below(3))
                .map(|_| random_value(rng, depth + 1))
                .collect();
            format!("[{}]", items.join(", "))
        }
        _ => random_scalar(rng),
    }
}

fn random_event(rng: &mut Rng, depth: usize) -> String {
    let fields: Vec<String> = (0..rng.below(4))
        .map(|_| {
            format!(
                "{}: {}",
                json_string(rng.pick(KEYS)),
                random_value(rng, depth)
            )
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// An event shaped like `pattern`: most of its keys, with values near what it asks for.
fn event_like(rng: &mut Rng, pattern: &serde_json::Value) -> String {
    use serde_json::Value;
    let Value::Object(map) = pattern else {
        return random_event(rng, 0);
    };
    let mut fields = Vec::new();
    for (key, value) in map {
        if key == "$or" {
            if let Value::Array(branches) = value
                && let Some(branch) = branches.get(rng.below(branches.len().max(1)))
            {
                let inner = event_like(rng, branch);
                let inner = &inner[1..inner.len() - 1];
                if !inner.is_empty() {
                    fields.push(inner.to_owned());
                }
            }
            continue;
        }
        if rng.chance(10) {
            continue;
        }
        let rendered = match value {
            Value::Object(_) => {
                let inner = event_like(rng, value);
                if rng.chance(25) {
                    format!("[{inner}, {}]", event_like(rng, value))
                } else {
                    inner
                }
            }
            Value::Array(items) if !items.is_empty() => {
                let chosen = &items[rng.below(items.len())];
                let near = value_near(rng, chosen);
                if rng.chance(20) {
                    format!("[{near}, {}]", random_scalar(rng))
                } else {
                    near
                }
            }
            _ => random_scalar(rng),
        };
        fields.push(format!("{}: {rendered}", json_string(key)));
    }
    if rng.chance(20) {
        fields.push(format!(
            "{}: {}",
            json_string(rng.pick(KEYS)),
            random_value(rng, 1)
        ));
    }
    format!("{{{}}}", fields.join(", "))
}

/// A value that a leaf matcher may or may not accept.
fn value_near(rng: &mut Rng, matcher: &serde_json::Value) -> String {
    use serde_json::Value;
    let near_string = |rng: &mut Rng, s: &str| -> String {
        let s = match rng.below(6) {
            0 => s.to_uppercase(),
            1 => s.to_lowercase(),
            2 => format!("{s}x"),
            3 => format!("x{s}"),
            4 => rng.pick(STRINGS).to_string(),
            _ => s.to_owned(),
        };
        json_string(&s.replace('*', "o").replace('\\', ""))
    };
    const ADDRESSES: &[&str] = &[
        "10.0.0.1",
        "10.0.0.255",
        "10.1.2.3",
        "10.0.0.0",
        "0.0.0.0",
        "2001:db8::5",
        "::1",
        "::",
        "2001:DB8:0:0::1",
        "10.0.0.010",
    ];
    match matcher {
        Value::String(s) => near_string(rng, s),
        Value::Object(op) => match op.iter().next() {
            Some((name, _)) if name == "cidr" => json_string(rng.pick(ADDRESSES)),
            Some((_, Value::String(s))) => near_string(rng, s),
            Some((_, Value::Object(inner))) => match inner.values().next() {
                Some(Value::String(s)) => near_string(rng, s),
                _ => random_scalar(rng),
            },
            _ if rng.chance(20) => json_string(rng.pick(ADDRESSES)),
            _ => random_scalar(rng),
        },
        _ => random_scalar(rng),
    }
}

fn random_cases(seed: u64, count: usize) -> Vec<Case> {
    let mut rng = Rng(seed);
    let mut cases = Vec::with_capacity(count);
    while cases.len() < count {
        let pattern = random_object_pattern(&mut rng, 0);
        let parsed: serde_json::Value =
            serde_json::from_str(&pattern).expect("generated patterns are JSON");
        for _ in 0..3 {
            cases.push(Case::new(pattern.clone(), event_like(&mut rng, &parsed)));
        }
        cases.push(Case::new(pattern, random_event(&mut rng, 0)));
    }
    cases
}
