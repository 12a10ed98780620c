//! Spin variable names and `{{ name }}` templates, as component variables and
//! `allowed_outbound_hosts` entries use them. Resolution of the values is the host's job.

/// Spin's `Key::validate`: `[a-z0-9_]`, starts with a lowercase letter, ends with a letter or
/// digit, no `__`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let starts_ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let ends_ok = name
        .chars()
        .last()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !chars_ok || !starts_ok || !ends_ok || name.contains("__") {
        return Err(format!(
            "`{name}` is not a valid variable name (lower_snake: [a-z0-9_], starts with a letter, no `__`, no trailing `_`)"
        ));
    }
    Ok(())
}

/// A string with `{{ variable }}` holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable(String),
}

impl Template {
    /// Parses a template; `{{` must be closed by `}}` around a valid variable name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in `{text}`"))?;
            let name = after[..end].trim();
            validate_name(name)?;
            parts.push(Part::Variable(name.to_string()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// The variable names the template refers to.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Variable(v) => Some(v.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Renders with `value(name)` for each variable; fails on the first variable without one.
    pub fn try_render<'a>(
        &self,
        value: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(literal) => out.push_str(literal),
                Part::Variable(name) => out.push_str(
                    value(name).ok_or_else(|| format!("no value for variable `{name}`"))?,
                ),
            }
        }
        Ok(out)
    }

    /// Renders with `value(name)` for each variable.
    pub fn render_with(&self, value: impl Fn(&str) -> String) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.clone(),
                Part::Variable(v) => value(v),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("fly_api_token").is_ok());
        for bad in ["Fly", "_a", "a_", "a__b", "a-b", "1a", ""] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_render_and_list_references() {
        let t = Template::parse("https://{{ app }}.fly.dev:{{port}}").expect("parse");
        assert_eq!(t.references().collect::<Vec<_>>(), vec!["app", "port"]);
        assert!(Template::parse("{{ open").is_err());
        assert!(Template::parse("{{ Bad }}").is_err());
    }

    #[test]
    fn try_render_names_the_missing_variable() {
        let t = Template::parse("{{ a }}-{{ b }}").expect("parse");
        let rendered = t.try_render(|name| (name == "a").then_some("x"));
        assert_eq!(rendered, Err("no value for variable `b`".to_string()));
        assert_eq!(t.try_render(|_| Some("v")), Ok("v-v".to_string()));
    }
}
