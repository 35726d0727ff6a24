//! Where a component's image comes from when its Store names none: the operator's settings
//! (`--image-registry`, `--image-tag`; the chart's `images.registry` and `images.tag`), so
//! one install serves every Store from the team's own registry.

use mercato_contract::Component;

/// Registry (with any path prefix) used when the operator is given none.
pub const DEFAULT_REGISTRY: &str = "mercato";

/// The name of `mercato-backup`'s image (the Dockerfile with `BIN=mercato-backup`).
pub const BACKUP_IMAGE: &str = "backup";

/// The default images: `<registry>/<component>:<tag>`, and `<registry>/backup:<tag>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDefaults {
    registry: String,
    tag: String,
}

impl Default for ImageDefaults {
    /// `mercato/<component>:<operator version>`: the release matching this operator, so an
    /// operator upgrade rolls the Stores that do not pin images.
    fn default() -> Self {
        ImageDefaults {
            registry: DEFAULT_REGISTRY.to_string(),
            tag: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

impl ImageDefaults {
    /// Checks both settings; `None` keeps the default of that part.
    pub fn new(registry: Option<&str>, tag: Option<&str>) -> Result<Self, String> {
        let defaults = ImageDefaults::default();
        let registry = match registry.map(str::trim).filter(|r| !r.is_empty()) {
            None => defaults.registry,
            Some(r) if r.contains("://") => {
                return Err(format!(
                    "image registry {r:?}: give a registry host and path (registry.example.com/team), without a scheme"
                ));
            }
            Some(r)
                if r.ends_with('/') || r.starts_with('/') || r.contains(char::is_whitespace) =>
            {
                return Err(format!(
                    "image registry {r:?}: no leading or trailing '/' and no spaces"
                ));
            }
            Some(r) => r.to_string(),
        };
        let tag = match tag.map(str::trim).filter(|t| !t.is_empty()) {
            None => defaults.tag,
            Some(t) if is_tag(t) => t.to_string(),
            Some(t) => {
                return Err(format!(
                    "image tag {t:?}: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
                ));
            }
        };
        Ok(ImageDefaults { registry, tag })
    }

    /// The image of `component` when its Store names none.
    pub fn image(&self, component: Component) -> String {
        self.named(component.name())
    }

    /// The image of `mercato-backup` (backups to and restores from a bucket) when its Store
    /// names none.
    pub fn backup(&self) -> String {
        self.named(BACKUP_IMAGE)
    }

    fn named(&self, name: &str) -> String {
        format!("{}/{name}:{}", self.registry, self.tag)
    }
}

/// The OCI distribution spec's tag grammar: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    tag.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_release_matching_the_operator() {
        assert_eq!(
            ImageDefaults::default().image(Component::Auth),
            format!("mercato/auth:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            ImageDefaults::new(Some(""), None).unwrap(),
            ImageDefaults::default()
        );
    }

    #[test]
    fn a_registry_and_tag_make_every_components_image() {
        let d =
            ImageDefaults::new(Some("registry.example.com:5000/shop"), Some("1.2.3-rc.1")).unwrap();
        assert_eq!(
            d.image(Component::Gateway),
            "registry.example.com:5000/shop/gateway:1.2.3-rc.1"
        );
    }

    #[test]
    fn malformed_settings_are_refused_with_the_reason() {
        for bad in [
            "https://registry.example.com",
            "registry.example.com/",
            "/shop",
            "a b",
        ] {
            let err = ImageDefaults::new(Some(bad), None).unwrap_err();
            assert!(err.contains("image registry"), "{bad}: {err}");
        }
        for bad in [".1", "-x", "a:b", "a/b", &"x".repeat(129)] {
            let err = ImageDefaults::new(None, Some(bad)).unwrap_err();
            assert!(err.contains("image tag"), "{bad}: {err}");
        }
    }
}
