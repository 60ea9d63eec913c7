//! Human tables: a header row and aligned columns, two spaces apart, the
//! last column unpadded (so lines carry no trailing blanks).
//!
//! Owns: layout only. May call: nothing. Must never be used for `--json`
//! output, which is the server's JSON as it came.

pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// A row of as many cells as there are headers (fewer are padded).
    pub fn row(&mut self, mut cells: Vec<String>) {
        debug_assert!(cells.len() <= self.headers.len(), "a cell without a column");
        cells.resize(self.headers.len(), String::new());
        // A cell is one line: a newline would break the columns.
        for cell in &mut cells {
            if cell.contains(['\n', '\r']) {
                *cell = cell.replace(['\n', '\r'], " ");
            }
        }
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let width = |i: usize| {
            std::iter::once(&self.headers)
                .chain(&self.rows)
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    let pad = widths[i] - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_blanks() {
        let mut table = Table::new(&["NAME", "RUNTIME", "ROUTES"]);
        table.row(vec!["greet".into(), "python".into(), "".into()]);
        table.row(vec!["a".into(), "wasm".into(), "GET:/a".into()]);
        assert_eq!(
            table.render(),
            "NAME   RUNTIME  ROUTES\ngreet  python\na      wasm     GET:/a\n"
        );
    }
}
