//! The order of images in the summary: by name, with runs of digits compared as numbers, so
//! `img0_2` comes before `img0_10` (as a person counts, not as bytes sort).

use std::cmp::Ordering;

/// Compares `a` and `b` piece by piece: digit runs by their value, other characters as
/// characters; names that differ only in leading zeros fall back to plain order.
pub fn natural(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a, b);
    loop {
        let (Some(cx), Some(cy)) = (x.chars().next(), y.chars().next()) else {
            return x.len().cmp(&y.len()).then_with(|| a.cmp(b));
        };
        if cx.is_ascii_digit() && cy.is_ascii_digit() {
            let (nx, rest_x) = split_digits(x);
            let (ny, rest_y) = split_digits(y);
            let (vx, vy) = (nx.trim_start_matches('0'), ny.trim_start_matches('0'));
            let by_value = vx.len().cmp(&vy.len()).then_with(|| vx.cmp(vy));
            if by_value != Ordering::Equal {
                return by_value;
            }
            (x, y) = (rest_x, rest_y);
        } else {
            if cx != cy {
                return cx.cmp(&cy);
            }
            (x, y) = (&x[cx.len_utf8()..], &y[cy.len_utf8()..]);
        }
    }
}

fn split_digits(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_sort_as_numbers() {
        let mut names = vec![
            "docker:img0_10",
            "docker:img0_2",
            "docker:img1_1",
            "docker:img0_1",
            "docker:img",
            "docker:img0_02",
            "docker:img0_99999999999999999999999",
            "docker:imgb",
        ];
        names.sort_by(|a, b| natural(a, b));
        assert_eq!(
            names,
            [
                "docker:img",
                "docker:img0_1",
                "docker:img0_02",
                "docker:img0_2",
                "docker:img0_10",
                "docker:img0_99999999999999999999999",
                "docker:img1_1",
                "docker:imgb",
            ]
        );
        assert_eq!(natural("a", "a"), Ordering::Equal);
    }
}
