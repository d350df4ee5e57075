//! Where each configuration value came from (built-in default, the file, or an
//! environment variable by name), and unknown keys caught before deserializing, so the
//! message says which layer holds the mistake and what was probably meant.
//!
//! The three layers are read separately here, with the same rules as
//! [`Settings::load`](super::Settings::load): every key whose default is a list may be
//! given comma-separated in the environment.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Value, ValueKind};

use super::{redact_url, ConfigError, DEFAULT_TOML};

/// Tables whose keys are the operator's own (host names), not picket's.
const FREE_TABLES: &[&str] = &["dns.static"];

/// Prefix of the environment variables picket reads.
const ENV_PREFIX: &str = "PICKET__";

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// The built-in default.
    Default,
    /// The configuration file.
    File(PathBuf),
    /// This environment variable.
    Env(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
        }
    }
}

/// One effective value.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Dotted key, e.g. `probe.timeout`.
    pub key: String,
    /// The value as TOML would write it, secrets redacted.
    pub value: String,
    /// The value as JSON, secrets redacted.
    pub json: serde_json::Value,
    /// Where it came from.
    pub source: Source,
}

/// The environment variable that sets `key`.
pub(crate) fn env_var(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

/// Variables named like picket's that picket does not read as settings.
const OTHER_VARS: &[&str] = &[
    "PICKET_CONFIG",
    "PICKET_TEST_CRASH",
    "PICKET_TEST_LOG",
    "PICKET_SCHEMA_WRITE",
];

/// The environment variables in `vars` that look meant as picket's settings but are
/// not read (`PICKET_PROBE__TIMEOUT`, one underscore short; `PICKETS__…`): they were
/// dropped without a word, and the operator believed them set. Only names with a `__`
/// (a setting's separator): Kubernetes gives every pod `PICKET_SERVICE_HOST`,
/// `PICKET_PORT_9464_TCP` and the like for a Service named `picket`. Told, not refused:
/// some other tool's variable must not stop a worker.
pub(crate) fn stray_env(vars: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut stray: Vec<String> = vars
        .into_iter()
        .filter(|v| {
            v.to_ascii_uppercase().starts_with("PICKET")
                && (v.contains("__") || single_underscored(v).is_some())
        })
        .filter(|v| !v.starts_with(ENV_PREFIX) && !OTHER_VARS.contains(&v.as_str()))
        .collect();
    stray.sort();
    stray
}

/// The proxy variables curl and most HTTP clients follow (`HTTPS_PROXY`, `http_proxy`,
/// `ALL_PROXY`, …) among `vars`. picket never does: a probe goes to the address its
/// limiter counted, through the egresses configured, so a host that reaches the web
/// only through such a proxy needs it as an egress (hunt S: every site was a confirmed
/// `down` there, curl reached them, and nothing said why).
pub(crate) fn proxy_env(vars: impl IntoIterator<Item = String>) -> Vec<String> {
    const PROXY_VARS: [&str; 3] = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"];
    let mut set: Vec<String> = vars
        .into_iter()
        .filter(|v| PROXY_VARS.iter().any(|p| v.eq_ignore_ascii_case(p)))
        .collect();
    set.sort();
    set
}

/// The setting `var` names with single underscores (`PICKET_AMQP_URL` for `amqp.url`),
/// the guess `PICKET_CONFIG` invites.
fn single_underscored(var: &str) -> Option<String> {
    let rest = var.strip_prefix("PICKET_")?.to_ascii_lowercase();
    default_keys()
        .iter()
        .find(|k| k.replace('.', "_") == rest)
        .cloned()
}

/// Every key of the defaults.
fn default_keys() -> &'static Vec<String> {
    static KEYS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let source = File::from_str(DEFAULT_TOML, FileFormat::Toml);
        let mut defaults = BTreeMap::new();
        if let Ok(raw) = collect(Config::builder().add_source(source)) {
            flatten(&raw, "", &|k| FREE_TABLES.contains(&k), &mut defaults);
        }
        defaults.into_keys().collect()
    })
}

/// What to say of a [`stray_env`] variable.
pub(crate) fn stray_env_warning(var: &str) -> String {
    let meant = single_underscored(var)
        .map(|key| format!("; for {key}, set {}", env_var(&key)))
        .unwrap_or_default();
    format!(
        "environment variable {var} is not read: settings are {ENV_PREFIX}SECTION__KEY \
         (two underscores after PICKET and between levels){meant}"
    )
}

fn env_key(var: &str) -> Option<String> {
    var.strip_prefix(ENV_PREFIX)
        .map(|k| k.to_ascii_lowercase().replace("__", "."))
}

/// Flattens a table into dotted keys, stopping at values that are not tables and at
/// keys `stop` names.
fn flatten(
    table: &HashMap<String, Value>,
    prefix: &str,
    stop: &dyn Fn(&str) -> bool,
    out: &mut BTreeMap<String, Value>,
) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match &v.kind {
            ValueKind::Table(t) if !stop(&key) => {
                flatten(&t.clone().into_iter().collect(), &key, stop, out)
            }
            _ => {
                out.insert(key, v.clone());
            }
        }
    }
}

fn collect(
    builder: config::builder::ConfigBuilder<config::builder::DefaultState>,
) -> Result<HashMap<String, Value>, ConfigError> {
    use config::Source as _;
    builder
        .build()
        .and_then(|c| c.collect())
        .map(|m| m.into_iter().collect())
        .map_err(|e| ConfigError::Load(e.to_string()))
}

/// The layers, read apart.
struct Layers {
    /// Every key picket knows, with its default.
    defaults: BTreeMap<String, Value>,
    /// Keys the file sets.
    file: BTreeMap<String, Value>,
    /// Keys the environment sets, with the variable's name.
    env: BTreeMap<String, String>,
}

impl Layers {
    fn read(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Layers, ConfigError> {
        let mut defaults = BTreeMap::new();
        let raw =
            collect(Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml)))?;
        flatten(&raw, "", &|k| FREE_TABLES.contains(&k), &mut defaults);
        let known = |k: &str| defaults.contains_key(k);
        let mut file_keys = BTreeMap::new();
        if let Some(path) = file.filter(|p| p.is_file()) {
            let raw =
                collect(Config::builder().add_source(File::from(path).format(FileFormat::Toml)))?;
            flatten(&raw, "", &known, &mut file_keys);
        }
        let env = env
            .keys()
            .filter_map(|var| env_key(var).map(|k| (k, var.clone())))
            .collect();
        Ok(Layers {
            defaults,
            file: file_keys,
            env,
        })
    }

    /// Whether `key` is a key of picket's, or inside one (a host under `dns.static`).
    fn knows(&self, key: &str) -> bool {
        self.defaults.contains_key(key)
            || self
                .defaults
                .keys()
                .any(|k| key.starts_with(&format!("{k}.")) || k.starts_with(&format!("{key}.")))
    }

    fn suggestion(&self, key: &str) -> Option<&str> {
        self.defaults
            .keys()
            .map(|k| (strsim::jaro_winkler(key, k), k))
            .filter(|(score, _)| *score > 0.85)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| k.as_str())
    }

    fn unknown_key_error(&self, file: Option<&Path>) -> Option<ConfigError> {
        if let Some(key) = self.file.keys().find(|k| !self.knows(k)) {
            let place = file.map_or_else(String::new, |p| format!(" in {}", p.display()));
            let mean = self
                .suggestion(key)
                .map_or_else(String::new, |s| format!("; did you mean {s}?"));
            return Some(ConfigError::Load(format!("unknown key {key}{place}{mean}")));
        }
        let (key, var) = self.env.iter().find(|(k, _)| !self.knows(k))?;
        let mean = self
            .suggestion(key)
            .map_or_else(String::new, |s| format!("; did you mean {}?", env_var(s)));
        Some(ConfigError::Load(format!(
            "unknown key {key} from environment variable {var}{mean}"
        )))
    }

    fn source(&self, key: &str, file: Option<&Path>) -> Source {
        let inside = |k: &str| k == key || k.starts_with(&format!("{key}."));
        if let Some((_, var)) = self.env.iter().find(|(k, _)| inside(k)) {
            return Source::Env(var.clone());
        }
        match file {
            Some(p) if self.file.keys().any(|k| inside(k)) => Source::File(p.to_path_buf()),
            _ => Source::Default,
        }
    }
}

/// Refuses a key picket does not know, naming the layer that holds it and the key
/// that was probably meant.
///
/// # Errors
/// [`ConfigError::Load`] for the first unknown key.
pub(crate) fn check_unknown(
    file: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<(), ConfigError> {
    match Layers::read(file, env)?.unknown_key_error(file) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Every effective value, sorted by key, with its source; secrets redacted.
///
/// # Errors
/// A layer that cannot be read, or an unknown key.
pub(crate) fn entries(
    file: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<Vec<Entry>, ConfigError> {
    let layers = Layers::read(file, env)?;
    if let Some(e) = layers.unknown_key_error(file) {
        return Err(e);
    }
    let mut environment = Environment::with_prefix("PICKET")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .source(Some(env.clone()));
    for (k, v) in &layers.defaults {
        if matches!(v.kind, ValueKind::Array(_)) {
            environment = environment.with_list_parse_key(k);
        }
    }
    let mut builder = Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
    if let Some(path) = file {
        builder = builder.add_source(File::from(path).format(FileFormat::Toml));
    }
    let raw = collect(builder.add_source(environment))?;
    let mut effective = BTreeMap::new();
    flatten(
        &raw,
        "",
        &|k| layers.defaults.contains_key(k),
        &mut effective,
    );
    Ok(effective
        .into_iter()
        .map(|(key, v)| Entry {
            value: toml_text(&v),
            json: json(&v),
            source: layers.source(&key, file),
            key,
        })
        .collect())
}

fn redact(s: &str) -> String {
    if s.contains("://") {
        redact_url(s)
    } else {
        s.to_string()
    }
}

/// The value as TOML writes it inline.
fn toml_text(v: &Value) -> String {
    match &v.kind {
        ValueKind::Nil => "\"\"".into(),
        ValueKind::Boolean(b) => b.to_string(),
        ValueKind::I64(n) => n.to_string(),
        ValueKind::I128(n) => n.to_string(),
        ValueKind::U64(n) => n.to_string(),
        ValueKind::U128(n) => n.to_string(),
        ValueKind::Float(f) => format!("{f:?}"),
        ValueKind::String(s) => serde_json::Value::String(redact(s)).to_string(),
        ValueKind::Array(a) => format!(
            "[{}]",
            a.iter().map(toml_text).collect::<Vec<_>>().join(", ")
        ),
        ValueKind::Table(t) => {
            let sorted: BTreeMap<_, _> = t.iter().collect();
            let inner: Vec<String> = sorted
                .iter()
                .map(|(k, v)| format!("{} = {}", key_text(k), toml_text(v)))
                .collect();
            if inner.is_empty() {
                "{}".to_string()
            } else {
                format!("{{ {} }}", inner.join(", "))
            }
        }
    }
}

fn key_text(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        serde_json::Value::String(k.to_string()).to_string()
    }
}

fn json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.kind {
        ValueKind::Nil => J::Null,
        ValueKind::Boolean(b) => J::Bool(*b),
        ValueKind::I64(n) => J::from(*n),
        ValueKind::I128(n) => J::String(n.to_string()),
        ValueKind::U64(n) => J::from(*n),
        ValueKind::U128(n) => J::String(n.to_string()),
        ValueKind::Float(f) => J::from(*f),
        ValueKind::String(s) => J::String(redact(s)),
        ValueKind::Array(a) => J::Array(a.iter().map(json).collect()),
        ValueKind::Table(t) => J::Object(t.iter().map(|(k, v)| (k.clone(), json(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_variables_named_like_settings_but_not_read_are_stray() {
        let vars = [
            "PICKET_PROBE__TIMEOUT",
            "PICKETS__PROBE__TIMEOUT",
            "PICKET__PROBE__TIMEOUT",
            "PICKET_CONFIG",
            "PATH",
            // Kubernetes's links to a Service named `picket`: not meant for picket.
            "PICKET_SERVICE_HOST",
            "PICKET_PORT_9464_TCP_ADDR",
        ];
        assert_eq!(
            stray_env(vars.iter().map(|v| v.to_string())),
            vec!["PICKETS__PROBE__TIMEOUT", "PICKET_PROBE__TIMEOUT"]
        );
    }

    /// Hunt N: `PICKET_AMQP_URL` (one underscore, as `PICKET_CONFIG` has) was dropped
    /// without a word, and the worker went to the default broker. A name that is a
    /// setting's with single underscores is told, and its right name said; other
    /// single-underscore names (a Kubernetes Service's) are still left alone.
    #[test]
    fn a_settings_name_with_single_underscores_is_stray_and_told_its_right_name() {
        let vars = [
            "PICKET_AMQP_URL",
            "PICKET_PROBE_TIMEOUT",
            "PICKET_SERVICE_HOST",
        ];
        assert_eq!(
            stray_env(vars.iter().map(|v| v.to_string())),
            vec!["PICKET_AMQP_URL", "PICKET_PROBE_TIMEOUT"]
        );
        let told = stray_env_warning("PICKET_PROBE_TIMEOUT");
        assert!(told.contains("PICKET__PROBE__TIMEOUT"), "{told}");
    }

    fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn each_value_names_its_source() {
        let f = file("[probe]\ntimeout = \"7s\"\n[dns.static]\n\"a.example\" = \"192.0.2.1\"\n");
        let e = entries(
            Some(f.path()),
            &env(&[
                ("PICKET__PROBE__ATTEMPTS", "3"),
                ("PICKET__DNS__NAMESERVERS", "127.0.0.1:53,127.0.0.1:54"),
            ]),
        )
        .expect("entries");
        let get = |k: &str| {
            e.iter()
                .find(|x| x.key == k)
                .unwrap_or_else(|| panic!("{k}"))
        };
        assert_eq!(get("probe.timeout").value, "\"7s\"");
        assert_eq!(
            get("probe.timeout").source,
            Source::File(f.path().to_path_buf())
        );
        assert_eq!(get("probe.attempts").value, "3");
        assert_eq!(
            get("probe.attempts").source,
            Source::Env("PICKET__PROBE__ATTEMPTS".into())
        );
        assert_eq!(
            get("dns.nameservers").value,
            "[\"127.0.0.1:53\", \"127.0.0.1:54\"]"
        );
        assert_eq!(get("dns.static").value, "{ \"a.example\" = \"192.0.2.1\" }");
        assert_eq!(get("probe.retry_delay").source, Source::Default);
        assert_eq!(get("egress").value, "[{ name = \"direct\" }]");
    }

    #[test]
    fn secrets_are_redacted() {
        let e = entries(
            None,
            &env(&[("PICKET__REDIS__URL", "redis://:hunter2@10.0.0.1:6379/0")]),
        )
        .expect("entries");
        let shown: Vec<String> = e
            .iter()
            .map(|x| format!("{} {}", x.value, x.json))
            .collect();
        assert!(
            shown
                .iter()
                .all(|s| !s.contains("hunter2") && !s.contains("guest:guest")),
            "{shown:?}"
        );
    }

    #[test]
    fn unknown_keys_name_their_layer_and_a_likely_key() {
        let f = file("[probe]\ntimout = \"7s\"\n");
        let e = check_unknown(Some(f.path()), &HashMap::new())
            .expect_err("unknown")
            .to_string();
        assert!(
            e.contains("probe.timout") && e.contains("did you mean probe.timeout?"),
            "{e}"
        );
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        let e = check_unknown(None, &env(&[("PICKET__PROBE__ATTEMTPS", "3")]))
            .expect_err("unknown")
            .to_string();
        assert!(
            e.contains("environment variable PICKET__PROBE__ATTEMTPS")
                && e.contains("did you mean PICKET__PROBE__ATTEMPTS?"),
            "{e}"
        );
        let e = check_unknown(None, &env(&[("PICKET__NOTHING__LIKE__IT", "3")]))
            .expect_err("unknown")
            .to_string();
        assert!(!e.contains("did you mean"), "{e}");
        check_unknown(None, &env(&[("PICKET__DNS__STATIC__HOST", "192.0.2.1")]))
            .expect("a host is a key of dns.static");
    }
}
