//! Plain-text tables for `vswitchctl`: columns as wide as their widest cell,
//! two spaces apart, the last column unpadded.

use std::io::{self, Write};

/// Column widths that fit the headers and every row.
pub fn widths<R, C, S>(headers: &[&str], rows: R) -> Vec<usize>
where
    R: IntoIterator<Item = C>,
    C: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.into_iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.as_ref().len());
            }
        }
    }
    w
}

/// Writes one line of cells padded to `widths`.
pub fn write_line<S: AsRef<str>>(
    out: &mut impl Write,
    cells: &[S],
    widths: &[usize],
) -> io::Result<()> {
    let mut s = String::new();
    for (i, c) in cells.iter().enumerate() {
        let c = c.as_ref();
        if i + 1 == cells.len() {
            s.push_str(c);
        } else {
            let w = widths.get(i).copied().unwrap_or(0);
            s.push_str(&format!("{c:<w$}  "));
        }
    }
    writeln!(out, "{}", s.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_the_widest_cell() {
        let rows = vec![
            vec!["a".to_string(), "long cell".to_string(), "x".to_string()],
            vec!["bbbb".to_string(), "c".to_string(), "".to_string()],
        ];
        let w = widths(&["H1", "H2", "H3"], &rows);
        assert_eq!(w, vec![4, 9, 2]);
        let mut out = Vec::new();
        write_line(&mut out, &["H1", "H2", "H3"], &w).unwrap();
        for r in &rows {
            write_line(&mut out, r, &w).unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "H1    H2         H3\na     long cell  x\nbbbb  c\n"
        );
    }
}
