//! HTTP routing with Spin's semantics (`spin/crates/routes`), on the same `routefinder` 0.5.4.
//!
//! Exact routes beat wildcards and the most specific route wins regardless of declaration order;
//! `/...` is a trailing wildcard that also matches the bare prefix; `:name` matches one segment;
//! one trailing `/` of a route is ignored; for duplicate routes the last declaration wins (and
//! a warning is logged). The base is always `/`.

use std::sync::Arc;

/// What a route resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    /// Index of the HTTP trigger in the manifest.
    pub trigger_index: usize,
    /// The route as written in the manifest (`spin-raw-component-route`).
    pub raw_route: String,
    /// The route with the base prepended (`spin-matched-route`).
    pub based_route: String,
}

/// A successful match.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// The trigger that matched.
    pub target: RouteTarget,
    /// `:name` captures in route order.
    pub named: Vec<(String, String)>,
    /// The trailing-wildcard part as Spin reports it in `spin-path-info`.
    pub path_info: String,
}

/// The routing table.
#[derive(Debug, Clone)]
pub struct Router {
    inner: Arc<routefinder::Router<RouteTarget>>,
}

/// Checks that a route is acceptable to the router.
pub fn check_route_syntax(route: &str) -> Result<(), String> {
    let mut r = routefinder::Router::new();
    r.add(effective_route(route), ())
        .map_err(|e| format!("invalid route `{route}`: {e}"))?;
    Ok(())
}

fn based_route(raw: &str) -> String {
    // Base `/` + route, with the route made absolute and one trailing `/` dropped.
    let absolute = if raw.starts_with('/') {
        raw.to_string()
    } else {
        format!("/{raw}")
    };
    if absolute.len() > 1 && absolute.ends_with('/') {
        absolute[..absolute.len() - 1].to_string()
    } else {
        absolute
    }
}

fn effective_route(raw: &str) -> String {
    let based = based_route(raw);
    match based.strip_suffix("/...") {
        Some(prefix) => format!("{prefix}/*"),
        None if based == "/..." => "/*".to_string(),
        None => based,
    }
}

impl Router {
    /// Builds the router from `(trigger index, raw route)` pairs; private routes are skipped by
    /// the caller.
    pub fn build<'a>(routes: impl IntoIterator<Item = (usize, &'a str)>) -> Result<Self, String> {
        let mut by_route: Vec<(String, RouteTarget)> = Vec::new();
        for (trigger_index, raw) in routes {
            let key = effective_route(raw);
            let target = RouteTarget {
                trigger_index,
                raw_route: raw.to_string(),
                based_route: based_route(raw),
            };
            if let Some(existing) = by_route.iter_mut().find(|(k, _)| *k == key) {
                tracing::error!(
                    tag = "route",
                    route = raw,
                    "duplicate route: the last declaration wins, as in Spin"
                );
                existing.1 = target;
            } else {
                by_route.push((key, target));
            }
        }
        let mut inner = routefinder::Router::new();
        for (key, target) in by_route {
            inner
                .add(key.as_str(), target)
                .map_err(|e| format!("invalid route `{key}`: {e}"))?;
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Finds the best route for a request path.
    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let m = self.inner.best_match(path)?;
        let target = m.handler().clone();
        let captures = m.captures();
        let named = captures
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // routefinder drops trailing slashes that Spin has always reported.
        let path_info = match captures.wildcard() {
            None => String::new(),
            Some(w) => match (w.is_empty(), path.ends_with('/')) {
                (true, false) => String::new(),
                (true, true) => "/".to_string(),
                (false, false) => format!("/{w}"),
                (false, true) => format!("/{w}/"),
            },
        };
        Some(RouteMatch {
            target,
            named,
            path_info,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[&str]) -> Router {
        Router::build(routes.iter().enumerate().map(|(i, r)| (i, *r))).expect("valid routes")
    }

    #[test]
    fn exact_beats_wildcard_regardless_of_order() {
        let r = router(&["/...", "/foo"]);
        assert_eq!(r.route("/foo").expect("match").target.trigger_index, 1);
        assert_eq!(r.route("/bar").expect("match").target.trigger_index, 0);
    }

    #[test]
    fn longest_prefix_wins() {
        let r = router(&["/api/...", "/api/users/...", "/..."]);
        assert_eq!(r.route("/api/users/1").expect("m").target.trigger_index, 1);
        assert_eq!(r.route("/api/other").expect("m").target.trigger_index, 0);
        assert_eq!(r.route("/x").expect("m").target.trigger_index, 2);
    }

    #[test]
    fn path_info_rules() {
        let r = router(&["/users/:userid/cart/..."]);
        let m = r.route("/users/1/cart/items/3/edit").expect("match");
        assert_eq!(m.path_info, "/items/3/edit");
        assert_eq!(m.named, vec![("userid".to_string(), "1".to_string())]);
        assert_eq!(r.route("/users/1/cart").expect("m").path_info, "");
        assert_eq!(r.route("/users/1/cart/").expect("m").path_info, "/");
        assert_eq!(r.route("/users/1/cart/a/").expect("m").path_info, "/a/");
    }

    #[test]
    fn duplicate_last_wins_and_no_match_is_none() {
        let r = router(&["/a", "/a/"]);
        assert_eq!(r.route("/a").expect("m").target.trigger_index, 1);
        assert!(r.route("/b").is_none());
    }
}
