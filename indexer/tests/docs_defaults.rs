//! docs/indexer.md's flag tables against the flags themselves: every flag of `kvroute
//! serve` has a row, and every row's default is the one the flag really has (read from
//! clap, which reads `kvroute_indexer::defaults`). A default changed in code and not in the
//! docs, or a flag added without a row, fails here.

use std::collections::BTreeMap;

use kvroute_indexer::serve::ServeConfig;

/// `--flag` -> the default column of its row, from every table of the document.
fn documented_defaults() -> BTreeMap<String, String> {
    let path = kvroute_testdata::repo_root().join("docs/indexer.md");
    let doc = std::fs::read_to_string(&path).expect("docs/indexer.md");
    let mut rows = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `--flag` | default | why |
        if cells.len() < 4 || !cells[0].is_empty() {
            continue;
        }
        let Some(flag) = cells[1]
            .strip_prefix("`--")
            .and_then(|f| f.split(['`', ' ']).next())
        else {
            continue;
        };
        rows.insert(flag.to_owned(), cells[2].to_owned());
    }
    rows
}

/// Whether the docs' default cell states `actual`: its first word, backticks removed, equal
/// as a number when both are numbers, else as text; "none" for flags without a default.
fn states(cell: &str, actual: Option<&str>) -> bool {
    let first = cell
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_matches('`')
        .replace(',', "");
    match actual {
        None => first == "none",
        Some(actual) => match (first.parse::<f64>(), actual.parse::<f64>()) {
            (Ok(a), Ok(b)) => a == b,
            _ => first == actual,
        },
    }
}

#[test]
fn every_flag_has_a_row_stating_its_real_default() {
    let command = <ServeConfig as clap::Args>::augment_args(clap::Command::new("serve"));
    let docs = documented_defaults();
    let mut wrong = Vec::new();
    for arg in command.get_arguments() {
        let Some(flag) = arg.get_long().filter(|f| !["help", "version"].contains(f)) else {
            continue;
        };
        let actual = arg
            .get_default_values()
            .first()
            .map(|v| v.to_string_lossy().into_owned());
        match docs.get(flag) {
            None => wrong.push(format!("--{flag}: no row in docs/indexer.md")),
            Some(cell) if !states(cell, actual.as_deref()) => wrong.push(format!(
                "--{flag}: docs say {cell:?}, the flag's default is {}",
                actual.as_deref().unwrap_or("none")
            )),
            Some(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
