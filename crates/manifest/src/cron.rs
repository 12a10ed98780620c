//! Cron expressions as Spin's trigger-cron plugin 0.3 reads them: exactly 6 fields, seconds
//! first, day-of-month AND day-of-week (`with_dom_and_dow`).

use croner::Cron;

/// Parses a cron expression the way the plugin does.
pub fn parse_expression(expression: &str) -> Result<Cron, String> {
    Cron::new(expression)
        .with_seconds_required()
        .with_dom_and_dow()
        .parse()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_fields_required_and_dom_and_dow() {
        assert!(parse_expression("0 */5 * * * *").is_ok());
        assert!(parse_expression("*/5 * * * *").is_err());
        assert!(parse_expression("0 0 0 * * * 2030").is_err());
        assert!(parse_expression("@hourly").is_ok());
        // The 13th AND a Friday, not "or".
        let c = parse_expression("0 0 0 13 * FRI").expect("parse");
        let from = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("date")
            .with_timezone(&chrono::Utc);
        let next = c.find_next_occurrence(&from, false).expect("next");
        assert_eq!(next.to_rfc3339(), "2026-02-13T00:00:00+00:00");
    }
}
