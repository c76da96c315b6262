//! The JSON report: [`Report`] written and read back by serde, schema
//! [`SCHEMA`]. One model both ways: `record` and `snapshot` write it,
//! `close-wait report` reads it back into the same type.

use std::fs::File;
use std::io::{BufReader, Read as _, Seek as _};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{Report, SCHEMA};
use crate::output::{OutputError, OutputFile};

/// Errors while reading a JSON report. Each names the file, and the line
/// and column where the input is broken. A cause (a JSON or I/O error) is
/// the error's `source()`, not repeated in its message: print the chain
/// (anyhow's `{:#}`) to see both.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {} JSON report", if source.is_eof() { "truncated" } else { "invalid" })]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: schema is '{found}', expected '{SCHEMA}' (is it a close-wait JSON report of this version?)")]
    Schema { path: PathBuf, found: String },
}

/// The report as written to `--json` files: pretty, one trailing newline.
pub fn to_text(r: &Report) -> String {
    let mut text = serde_json::to_string_pretty(r).expect("a report serializes");
    text.push('\n');
    text
}

/// Replaces the file `out` with the report.
pub fn write(out: &mut OutputFile, r: &Report) -> Result<(), OutputError> {
    out.replace(to_text(r).as_bytes())
}

#[derive(Deserialize)]
struct SchemaOnly {
    schema: Option<String>,
}

fn syntax(path: &Path, source: serde_json::Error) -> JsonError {
    JsonError::Syntax {
        path: path.to_path_buf(),
        line: source.line(),
        column: source.column(),
        source,
    }
}

/// Reads a JSON report from `file` (named `path` in errors) in two streamed
/// passes, at most `max` bytes each: the schema first, so that a foreign
/// document is named as such rather than by its first unexpected field.
pub fn read(path: &Path, file: &mut File, max: u64) -> Result<Report, JsonError> {
    let head: SchemaOnly =
        serde_json::from_reader(BufReader::new((&*file).take(max))).map_err(|e| syntax(path, e))?;
    match head.schema.as_deref() {
        Some(SCHEMA) => {}
        other => {
            return Err(JsonError::Schema {
                path: path.to_path_buf(),
                found: other.unwrap_or("(missing)").to_owned(),
            })
        }
    }
    file.rewind().map_err(|source| JsonError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_reader(BufReader::new((&*file).take(max))).map_err(|e| syntax(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn written_report_reads_back_equal() {
        let d = TempDir::new("json-rt");
        let p = d.0.join("r.json");
        let r = crate::model::tests::sample();
        write(&mut OutputFile::claim(&p, None).unwrap(), &r).unwrap();
        let back = read(&p, &mut File::open(&p).unwrap(), 1 << 30).unwrap();
        assert_eq!(back, r);
    }
}
