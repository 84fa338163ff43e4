//! The plain tables of `cache list` and `sif list`: columns that line up, two spaces apart.

/// The head and then each row as a line, every cell padded to its column's widest; the last
/// column is not padded, so no line ends in spaces.
pub fn aligned<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> Vec<String> {
    let mut widths = head.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out
    };
    std::iter::once(line(head))
        .chain(
            rows.iter()
                .map(|row| line(row.each_ref().map(String::as_str))),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_on_the_widest_cell_and_lines_end_without_spaces() {
        let rows = [
            [
                "tiny".to_string(),
                "1.2 MiB".to_string(),
                "idle".to_string(),
            ],
            [
                "ünïcode-name".to_string(),
                "3 B".to_string(),
                "".to_string(),
            ],
        ];
        assert_eq!(
            aligned(["FILE", "SIZE", "STATE"], &rows),
            [
                "FILE          SIZE     STATE",
                "tiny          1.2 MiB  idle",
                "ünïcode-name  3 B      ",
            ]
        );
    }
}
