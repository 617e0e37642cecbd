//! What every `herd` subcommand shares at the command line: one output
//! flag (`-o table|json|yaml`: a table for people, JSON or YAML for
//! scripts, with the same facts in each) and plain text tables.

use serde::Serialize;

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One pretty-printed JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

/// Why a result could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("rendering JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("rendering YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
}

impl Output {
    /// `value` in this format; `table` renders it for people.
    pub fn render<T: Serialize>(
        self,
        value: &T,
        table: impl FnOnce(&T) -> String,
    ) -> Result<String, RenderError> {
        Ok(match self {
            Output::Table => table(value),
            Output::Json => serde_json::to_string_pretty(value)? + "\n",
            Output::Yaml => serde_saphyr::to_string(value)?,
        })
    }

    /// Prints `value` in this format to stdout.
    pub fn print<T: Serialize>(
        self,
        value: &T,
        table: impl FnOnce(&T) -> String,
    ) -> Result<(), RenderError> {
        print!("{}", self.render(value, table)?);
        Ok(())
    }

    /// Whether this is a format for scripts.
    pub fn is_structured(self) -> bool {
        self != Output::Table
    }
}

/// A text table: a header and rows, columns padded to their widest cell,
/// separated by two spaces (as `kubectl get` and `fleetctl list-units`).
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I, S>(header: I) -> Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            rows: vec![header.into_iter().map(Into::into).collect()],
        }
    }

    pub fn row<I, S>(&mut self, cells: I) -> &mut Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(
                        ' ',
                        widths[c] - cell.chars().count() + 2,
                    ));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row {
        name: &'static str,
        n: u32,
    }

    #[test]
    fn the_same_facts_in_every_format() {
        let rows = vec![Row { name: "a", n: 1 }, Row { name: "bb", n: 22 }];
        let table = |rows: &Vec<Row>| {
            let mut t = Table::new(["NAME", "N"]);
            for r in rows {
                t.row([r.name.to_string(), r.n.to_string()]);
            }
            t.render()
        };
        assert_eq!(
            Output::Table.render(&rows, table).unwrap(),
            "NAME  N\na     1\nbb    22\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&Output::Json.render(&rows, table).unwrap()).unwrap();
        assert_eq!(json[1]["n"], 22);
        let yaml = Output::Yaml.render(&rows, table).unwrap();
        assert!(yaml.contains("name: bb") && yaml.contains(": 22"), "{yaml}");
    }
}
