//! Output for people and for machines from the same data: every command
//! builds a JSON value; tables and `key: value` blocks are rendered from it.

use serde_json::{Map, Value};

pub struct Output {
    pub json: Value,
    pub text: String,
    /// Exit status (a one-off process's status for `run`).
    pub exit: u32,
}

impl Output {
    /// Nothing more to print (the command streamed its output).
    pub fn streamed(exit: u32) -> Output {
        Output {
            json: Value::Null,
            text: String::new(),
            exit,
        }
    }

    /// A plain confirmation; `--json` gets `{"message": ...}`.
    pub fn message(text: impl Into<String>) -> Output {
        let text = text.into();
        Output {
            json: serde_json::json!({ "message": text }),
            text,
            exit: 0,
        }
    }

    /// A confirmation `text` whose `--json` is `json` (what changed).
    pub fn done(text: impl Into<String>, json: Value) -> Output {
        Output {
            json,
            text: text.into(),
            exit: 0,
        }
    }

    /// A raw value printed as is (`config:get`); `--json` gets `{"value": ...}`.
    pub fn raw(field: &str, value: String) -> Output {
        let mut m = Map::new();
        m.insert(field.into(), Value::String(value.clone()));
        Output {
            json: Value::Object(m),
            text: value,
            exit: 0,
        }
    }

    /// A list: a table with the given (header, field) columns.
    pub fn list(columns: &[(&str, &str)], items: Vec<Value>) -> Output {
        let mut rows: Vec<Vec<String>> = vec![columns.iter().map(|c| c.0.to_string()).collect()];
        for item in &items {
            rows.push(columns.iter().map(|c| cell(item.get(c.1))).collect());
        }
        let text = if items.is_empty() {
            String::from("(none)")
        } else {
            table(&rows)
        };
        Output {
            json: Value::Array(items),
            text,
            exit: 0,
        }
    }

    /// One object as `=== title` then aligned `key: value` lines.
    pub fn info(title: &str, obj: Value) -> Output {
        let mut text = format!("=== {title}\n");
        if let Value::Object(m) = &obj {
            let width = m.keys().map(|k| k.len()).max().unwrap_or(0);
            for (k, v) in m {
                text.push_str(&format!("{k:width$}  {}\n", cell(Some(v))));
            }
        }
        Output {
            json: obj,
            text: text.trim_end().to_string(),
            exit: 0,
        }
    }
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        // Tables and info blocks go to a terminal; `--json` keeps the text.
        Some(Value::String(s)) => crate::names::escape_controls(s).into_owned(),
        Some(Value::Array(a)) => {
            let parts: Vec<String> = a.iter().map(|x| cell(Some(x))).collect();
            if parts.is_empty() {
                "-".into()
            } else {
                parts.join(",")
            }
        }
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| format!("{}={}", crate::names::escape_controls(k), cell(Some(v))))
            .collect::<Vec<_>>()
            .join(" "),
        Some(other) => other.to_string(),
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| {
                    if i + 1 == cols {
                        c.clone()
                    } else {
                        format!("{c:w$}", w = widths[i])
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
