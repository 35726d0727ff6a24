//! Plain-text tables and money for people.

/// `1250, "EUR"` → `12.50 EUR`.
pub fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", abs / 100, abs % 100)
}

/// Left-aligned columns, as wide as their widest cell.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    println!("{}", render_table(header, rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_minor_units() {
        assert_eq!(money(1250, "EUR"), "12.50 EUR");
        assert_eq!(money(5, "EUR"), "0.05 EUR");
        assert_eq!(money(-100, "USD"), "-1.00 USD");
    }

    #[test]
    fn columns_line_up() {
        let t = render_table(
            &["ID", "NAME"],
            &[
                vec!["1".into(), "Kettle".into()],
                vec!["22".into(), "Mug".into()],
            ],
        );
        assert_eq!(t, "ID  NAME\n1   Kettle\n22  Mug");
    }
}
