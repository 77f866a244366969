//! `weft profile`: write a ServiceProfile for one Service, either as a
//! commented skeleton to edit (`--template`) or generated from the
//! Service's OpenAPI description (`--open-api`).
//!
//! Both modes build the profile from the `weft-smi-crds` types the
//! controller reads, validate it with the same code, and check that the
//! printed YAML reads back to the same object before printing it, so the
//! output can never be something the controller would reject. The only
//! text not produced by serialization is the comments of the template.
//!
//! OpenAPI descriptions are read as untyped JSON values: only `paths`, the
//! operations' method keys, `basePath`/`servers` and two vendor extensions
//! matter here, and a typed OpenAPI model would add a large dependency
//! that rejects real-world documents over fields this command ignores.

use std::cmp::Reverse;
use std::io::{Read, Write};

use serde_json::{Map, Value};
use weft_smi_crds::profile::{
    RequestMatch, ResponseClass, ResponseMatch, RetryBudget, RouteSpec, StatusRange,
};
use weft_smi_crds::{parse_documents, AnyObject, ServiceProfile, ServiceProfileSpec};

/// Flags of `weft profile`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Print a ServiceProfile: a commented template, or routes from an OpenAPI description",
    long_about = "Print a ServiceProfile for the Service SERVICE in NAMESPACE on stdout, named \
SERVICE.NAMESPACE.svc.CLUSTER_DOMAIN, ready for `kubectl apply -f -` or the controller's \
--config-dir. Before printing, the profile is validated exactly as the controller validates \
profiles.\n\n\
--template\n  \
A commented skeleton to edit by hand: two example routes (condition, retryable flag, timeout), \
a response class and Linkerd's default retry budget (retryRatio 0.2, minRetriesPerSecond 10, \
ttl 10s).\n\n\
--open-api FILE\n  \
Routes generated from an OpenAPI description: Swagger 2.0 or OpenAPI 3.x, JSON or YAML; FILE `-` \
reads stdin. One route per operation, named `METHOD /path/{param}`, matching the method and a \
pathRegex in which each {param} matches one path segment ([^/]*) and everything else is literal. \
Paths start with basePath (Swagger 2.0) or the path of the first server URL (OpenAPI 3). \
Operations with `x-linkerd-retryable: true` become retryable, and `x-linkerd-timeout: 300ms` \
sets the route timeout. More specific paths come first, since the first matching route wins.\n\n\
Examples:\n  \
weft profile --template web -n shop > web-profile.yaml\n  \
weft profile --open-api books.swagger.json books -n shop | kubectl apply -f -\n  \
curl -s http://books.shop/openapi.yaml | weft profile --open-api - books -n shop\n\n\
See docs/routes.md."
)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["template", "open_api"])))]
pub struct ProfileArgs {
    /// Print a commented skeleton with example routes to edit.
    #[arg(long)]
    template: bool,
    /// Generate routes from this OpenAPI (Swagger 2.0 or 3.x) file, JSON or YAML; `-` reads stdin.
    #[arg(long = "open-api", value_name = "FILE")]
    open_api: Option<String>,
    /// The Service the profile is for.
    #[arg(value_name = "SERVICE", value_parser = service_name)]
    service: String,
    /// The Service's namespace.
    #[arg(short, long, default_value = "default", value_parser = namespace_name)]
    namespace: String,
    /// The cluster's DNS domain, the last part of the profile's name.
    #[arg(long, default_value = "cluster.local", value_parser = cluster_domain, value_name = "DOMAIN")]
    cluster_domain: String,
}

/// Why `weft profile` could not print a profile. Each variant names the
/// input and, for a bad description, where in it the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The OpenAPI file (or stdin) could not be read.
    #[error("cannot read {input}")]
    Read {
        /// The file name, or `<stdin>`.
        input: String,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// The input starts like JSON but is neither valid JSON nor YAML.
    #[error("{input} is not valid JSON")]
    Json {
        /// The file name, or `<stdin>`.
        input: String,
        /// The JSON parser's error, with its line and column.
        #[source]
        error: serde_json::Error,
    },
    /// The input is not valid YAML.
    #[error("{input} is not valid YAML")]
    Yaml {
        /// The file name, or `<stdin>`.
        input: String,
        /// The YAML parser's error, with its line and column.
        #[source]
        error: serde_yaml::Error,
    },
    /// The document parsed but is not an OpenAPI description this command
    /// understands (no or an unsupported `swagger`/`openapi` version).
    #[error("{input} is not an OpenAPI description: {reason}")]
    NotOpenApi {
        /// The file name, or `<stdin>`.
        input: String,
        /// What is missing or unsupported.
        reason: String,
    },
    /// A field of the description has the wrong shape or value.
    #[error("{input}: {at}: {reason}")]
    Invalid {
        /// The file name, or `<stdin>`.
        input: String,
        /// Where in the description, e.g. `paths["/books"].get.x-linkerd-timeout`.
        at: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The description has no operations to make routes from.
    #[error("{input}: {reason}")]
    NoRoutes {
        /// The file name, or `<stdin>`.
        input: String,
        /// `no paths` or why none of the paths yielded an operation.
        reason: String,
    },
    /// The profile could not be serialized as YAML.
    #[error("cannot write the profile as YAML")]
    Serialize(#[source] serde_yaml::Error),
    /// The generated profile failed validation or did not read back: a
    /// bug here, reported rather than printing something unusable.
    #[error("the generated profile is not valid (a bug in weft): {0}")]
    Generated(String),
    /// Writing to stdout failed (e.g. a closed pipe).
    #[error("cannot write to stdout")]
    Write(#[source] std::io::Error),
}

/// Runs `weft profile`: builds the profile for the chosen mode and prints it.
pub fn run(args: &ProfileArgs) -> Result<(), ProfileError> {
    let name = format!(
        "{}.{}.svc.{}",
        args.service, args.namespace, args.cluster_domain
    );
    let text = match &args.open_api {
        Some(file) => {
            let (input, text) = read_input(file)?;
            let doc = parse_description(&text, &input)?;
            let spec = OpenApi::new(&doc, &input)?.profile_spec()?;
            let profile = new_profile(&name, &args.namespace, spec);
            let yaml = serde_yaml::to_string(&profile).map_err(ProfileError::Serialize)?;
            check_output(&yaml, &profile)?;
            yaml
        }
        None => {
            let profile = new_profile(&name, &args.namespace, template_spec());
            let yaml = render_template(&profile, &args.service, &args.namespace)?;
            check_output(&yaml, &profile)?;
            yaml
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(ProfileError::Write)
}

/// A ServiceProfile object with `name` in `namespace`.
fn new_profile(name: &str, namespace: &str, spec: ServiceProfileSpec) -> ServiceProfile {
    let mut profile = ServiceProfile::new(name, spec);
    profile.metadata.namespace = Some(namespace.to_owned());
    profile
}

/// Validates the profile and checks that `yaml` reads back as exactly
/// that profile, so what is printed is what the controller will load.
fn check_output(yaml: &str, profile: &ServiceProfile) -> Result<(), ProfileError> {
    profile
        .validate()
        .map_err(|e| ProfileError::Generated(e.to_string()))?;
    let mut docs = parse_documents(yaml).map_err(|e| ProfileError::Generated(e.to_string()))?;
    match (docs.pop(), docs.is_empty()) {
        (Some(AnyObject::ServiceProfile(back)), true) if *back == *profile => Ok(()),
        _ => Err(ProfileError::Generated(
            "the printed YAML does not read back as the same ServiceProfile".to_owned(),
        )),
    }
}

// ---------------------------------------------------------------------------
// Names

/// A Service name is a DNS-1035 label, as Kubernetes requires.
fn service_name(s: &str) -> Result<String, String> {
    if dns_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase()) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a Service name: use at most 63 lower-case letters, digits and '-', \
             starting with a letter and ending with a letter or digit"
        ))
    }
}

/// A namespace name is a DNS-1123 label.
fn namespace_name(s: &str) -> Result<String, String> {
    if dns_label(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a namespace name: use at most 63 lower-case letters, digits and '-', \
             starting and ending with a letter or digit"
        ))
    }
}

/// A cluster domain is dot-separated DNS labels (`cluster.local`).
fn cluster_domain(s: &str) -> Result<String, String> {
    if s.len() <= 253 && s.split('.').all(dns_label) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a DNS domain: use dot-separated labels of lower-case letters, digits \
             and '-', such as cluster.local"
        ))
    }
}

fn dns_label(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| ok(c) || c == '-')
        && s.starts_with(ok)
        && s.ends_with(ok)
}

// ---------------------------------------------------------------------------
// Template

/// The skeleton's routes: one retryable read with a timeout, one write
/// with a response class, and Linkerd's default retry budget.
fn template_spec() -> ServiceProfileSpec {
    ServiceProfileSpec {
        routes: vec![
            RouteSpec {
                name: "GET /books/{id}".to_owned(),
                condition: RequestMatch {
                    method: Some("GET".to_owned()),
                    path_regex: Some("/books/[^/]*".to_owned()),
                    ..RequestMatch::default()
                },
                response_classes: Vec::new(),
                is_retryable: true,
                timeout: Some("300ms".to_owned()),
            },
            RouteSpec {
                name: "POST /books".to_owned(),
                condition: RequestMatch {
                    method: Some("POST".to_owned()),
                    path_regex: Some("/books".to_owned()),
                    ..RequestMatch::default()
                },
                response_classes: vec![ResponseClass {
                    condition: ResponseMatch {
                        status: Some(StatusRange {
                            min: Some(500),
                            max: Some(599),
                        }),
                        ..ResponseMatch::default()
                    },
                    is_failure: true,
                }],
                is_retryable: false,
                timeout: None,
            },
        ],
        retry_budget: Some(RetryBudget::default()),
        dst_overrides: Vec::new(),
        opaque_ports: Vec::new(),
    }
}

/// Comments of the template, each put before the next serialized line
/// (after the previous one) whose text starts with the key, at that
/// line's indentation.
const TEMPLATE_NOTES: &[(&str, &str)] = &[
    (
        "name:",
        "The profile applies to the Service with this fully qualified name.",
    ),
    (
        "routes:",
        "Routes name groups of requests: each has its own metrics (the rt_route label),\n\
         retries and timeout. A request belongs to the first route whose condition\n\
         matches it, so list specific routes before general ones.",
    ),
    (
        "- name:",
        "The route's name: the rt_route label of its metrics.",
    ),
    (
        "condition:",
        "Which requests belong to the route. pathRegex must match the whole path\n\
         (it is anchored at both ends); method is case-sensitive. Fields set\n\
         together must all match. Conditions combine with all, any and not:\n\
         condition:\n  \
           all:\n  \
           - pathRegex: /books/[^/]*\n  \
           - not:\n      \
               method: DELETE",
    ),
    (
        "isRetryable:",
        "Retry failed requests on this route, within the retry budget below.\n\
         Only mark routes whose requests are safe to send twice.",
    ),
    (
        "timeout:",
        "Give up on a request (retries included) after this long.\n\
         Go duration syntax: 300ms, 2s, 1m30s.",
    ),
    (
        "responseClasses:",
        "Response classes decide which responses count as failures, for the\n\
         success rate and for retries. The first class whose condition matches\n\
         decides; other responses are failures when their status is 5xx. Status\n\
         ranges are inclusive; with only min or only max the other side is open.\n\
         Another class, for example:\n\
         - condition:\n    \
             any:\n    \
             - status: {min: 429, max: 429}\n    \
             - status: {min: 503, max: 503}\n  \
           isFailure: true",
    ),
    (
        "retryBudget:",
        "Retries to this service may add at most retryRatio (0.2 = 20%) to the\n\
         request load, plus minRetriesPerSecond; requests count towards the\n\
         budget for ttl. These are Linkerd's defaults.",
    ),
];

/// Commented-out fields appended after the serialized profile.
const TEMPLATE_TRAILER: &str = concat!(
    "  # Ports whose connections skip protocol detection and are proxied as\n",
    "  # plain TCP (server-speaks-first protocols such as MySQL):\n",
    "  # opaquePorts:\n",
    "  # - \"3306\"\n",
);

/// Serializes the template profile and interleaves [`TEMPLATE_NOTES`].
fn render_template(
    profile: &ServiceProfile,
    service: &str,
    namespace: &str,
) -> Result<String, ProfileError> {
    let yaml = serde_yaml::to_string(profile).map_err(ProfileError::Serialize)?;
    let mut out = format!(
        "# ServiceProfile for the Service {service:?} in namespace {namespace:?}.\n\
         # Replace the example routes with the service's own, then apply it:\n\
         #   kubectl apply -f FILE\n\
         # To generate routes from an OpenAPI description instead:\n\
         #   weft profile --open-api FILE {service} -n {namespace}\n"
    );
    let mut notes = TEMPLATE_NOTES.iter().peekable();
    for line in yaml.lines() {
        let content = line.trim_start();
        if let Some((_, note)) = notes.next_if(|(key, _)| content.starts_with(key)) {
            let indent = &line[..line.len() - content.len()];
            for comment in note.lines() {
                out.push_str(indent);
                out.push_str(if comment.is_empty() { "#" } else { "# " });
                out.push_str(comment);
                out.push('\n');
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some((key, _)) = notes.next() {
        return Err(ProfileError::Generated(format!(
            "template comment anchor {key:?} not found in the serialized profile"
        )));
    }
    out.push_str(TEMPLATE_TRAILER);
    Ok(out)
}

// ---------------------------------------------------------------------------
// OpenAPI

/// Operation keys of a path item, in the order routes for one path are
/// listed (alphabetical, as Linkerd lists them).
const METHODS: [&str; 8] = [
    "delete", "get", "head", "options", "patch", "post", "put", "trace",
];

/// Reads FILE, or stdin for `-`; returns the name to use in messages too.
fn read_input(file: &str) -> Result<(String, String), ProfileError> {
    if file == "-" {
        let input = "<stdin>".to_owned();
        let mut text = String::new();
        match std::io::stdin().read_to_string(&mut text) {
            Ok(_) => Ok((input, text)),
            Err(error) => Err(ProfileError::Read { input, error }),
        }
    } else {
        match std::fs::read_to_string(file) {
            Ok(text) => Ok((file.to_owned(), text)),
            Err(error) => Err(ProfileError::Read {
                input: file.to_owned(),
                error,
            }),
        }
    }
}

/// Parses JSON or YAML into an untyped value. Text starting with `{` or
/// `[` is JSON (falling back to YAML flow style before giving up with the
/// JSON error); anything else is YAML, of which JSON is a subset anyway.
fn parse_description(text: &str, input: &str) -> Result<Value, ProfileError> {
    let text = text.trim_start_matches('\u{feff}');
    if text.trim().is_empty() {
        return Err(ProfileError::NotOpenApi {
            input: input.to_owned(),
            reason: "the input is empty".to_owned(),
        });
    }
    if text.trim_start().starts_with(['{', '[']) {
        serde_json::from_str(text).or_else(|error| {
            serde_yaml::from_str(text).map_err(|_| ProfileError::Json {
                input: input.to_owned(),
                error,
            })
        })
    } else {
        serde_yaml::from_str(text).map_err(|error| ProfileError::Yaml {
            input: input.to_owned(),
            error,
        })
    }
}

/// Which OpenAPI generation a document is: they keep the base path in
/// different places.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    /// Swagger 2.0: `basePath`.
    Swagger2,
    /// OpenAPI 3.x: `servers[0].url`, overridable per path and operation.
    OpenApi3,
}

/// One OpenAPI description being turned into routes.
struct OpenApi<'a> {
    doc: &'a Value,
    root: &'a Map<String, Value>,
    input: &'a str,
    version: Version,
}

/// A generated route with what it is sorted by.
struct Generated {
    path: String,
    method: usize,
    route: RouteSpec,
}

impl<'a> OpenApi<'a> {
    /// Checks that `doc` is a Swagger 2.0 or OpenAPI 3.x description.
    fn new(doc: &'a Value, input: &'a str) -> Result<Self, ProfileError> {
        let not_openapi = |reason: String| ProfileError::NotOpenApi {
            input: input.to_owned(),
            reason,
        };
        let Some(root) = doc.as_object() else {
            return Err(not_openapi(format!(
                "expected a mapping at the top level, found {}",
                kind_of(doc)
            )));
        };
        let version_text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let version = match (root.get("swagger"), root.get("openapi")) {
            (Some(v), _) => {
                let v = version_text(v);
                if v != "2.0" && v != "2" {
                    return Err(not_openapi(format!(
                        "swagger version {v:?} is not supported (expected \"2.0\")"
                    )));
                }
                Version::Swagger2
            }
            (None, Some(v)) => {
                let v = version_text(v);
                if !(v == "3" || v.starts_with("3.")) {
                    return Err(not_openapi(format!(
                        "openapi version {v:?} is not supported (expected 3.x, or swagger: \"2.0\")"
                    )));
                }
                Version::OpenApi3
            }
            (None, None) => {
                return Err(not_openapi(
                    "it has neither a `swagger: \"2.0\"` nor an `openapi: 3.x` field".to_owned(),
                ))
            }
        };
        Ok(Self {
            doc,
            root,
            input,
            version,
        })
    }

    fn invalid(&self, at: impl Into<String>, reason: impl Into<String>) -> ProfileError {
        ProfileError::Invalid {
            input: self.input.to_owned(),
            at: at.into(),
            reason: reason.into(),
        }
    }

    /// One route per operation, most specific paths first.
    fn profile_spec(&self) -> Result<ServiceProfileSpec, ProfileError> {
        let no_routes = |reason: &str| ProfileError::NoRoutes {
            input: self.input.to_owned(),
            reason: reason.to_owned(),
        };
        let paths = match self.root.get("paths") {
            None | Some(Value::Null) => {
                return Err(no_routes(
                    "no paths: the description lists no HTTP operations to make routes from",
                ))
            }
            Some(Value::Object(paths)) => paths,
            Some(other) => {
                return Err(self.invalid(
                    "paths",
                    format!(
                        "expected a mapping of paths to operations, found {}",
                        kind_of(other)
                    ),
                ))
            }
        };
        let base = self.base_path()?;
        let mut generated = Vec::new();
        let mut path_count = 0;
        for (key, item) in paths {
            if key.starts_with("x-") {
                continue; // vendor extension of the Paths object
            }
            path_count += 1;
            let at = format!("paths[{key:?}]");
            let item = self.resolve_path_item(item, &at)?;
            let item_base =
                match self.servers_base(item.get("servers"), &format!("{at}.servers"))? {
                    Some(b) => b,
                    None => base.clone(),
                };
            for (index, method) in METHODS.iter().enumerate() {
                let Some(op) = item.get(*method) else {
                    continue;
                };
                let at = format!("{at}.{method}");
                let Some(op) = op.as_object() else {
                    return Err(self.invalid(
                        at,
                        format!("expected an operation object, found {}", kind_of(op)),
                    ));
                };
                let op_base =
                    match self.servers_base(op.get("servers"), &format!("{at}.servers"))? {
                        Some(b) => b,
                        None => item_base.clone(),
                    };
                let path = join_path(&op_base, key);
                let path_regex = path_regex(&op_base, key)
                    .map_err(|reason| self.invalid(format!("paths[{key:?}]"), reason))?;
                let upper = method.to_ascii_uppercase();
                generated.push(Generated {
                    route: RouteSpec {
                        name: format!("{upper} {path}"),
                        condition: RequestMatch {
                            method: Some(upper),
                            path_regex: Some(path_regex),
                            ..RequestMatch::default()
                        },
                        response_classes: Vec::new(),
                        is_retryable: self.retryable(op, &at)?,
                        timeout: self.timeout(op, &at)?,
                    },
                    path,
                    method: index,
                });
            }
        }
        if path_count == 0 {
            return Err(no_routes(
                "no paths: the description lists no HTTP operations to make routes from",
            ));
        }
        if generated.is_empty() {
            return Err(no_routes(&format!(
                "no operations: none of the {path_count} path(s) has a {} operation",
                METHODS.join("/")
            )));
        }
        generated.sort_by(|a, b| {
            specificity(&a.path)
                .cmp(&specificity(&b.path))
                .then(a.method.cmp(&b.method))
        });
        Ok(ServiceProfileSpec {
            routes: generated.into_iter().map(|g| g.route).collect(),
            ..ServiceProfileSpec::default()
        })
    }

    /// The path every route starts with: `basePath` in Swagger 2.0, the
    /// path of the first server URL in OpenAPI 3 (empty when absent).
    fn base_path(&self) -> Result<String, ProfileError> {
        match self.version {
            Version::Swagger2 => match self.root.get("basePath") {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(b)) => Ok(normalize_base(b)),
                Some(other) => Err(self.invalid(
                    "basePath",
                    format!(
                        "expected a string such as \"/v1\", found {}",
                        kind_of(other)
                    ),
                )),
            },
            Version::OpenApi3 => Ok(self
                .servers_base(self.root.get("servers"), "servers")?
                .unwrap_or_default()),
        }
    }

    /// The path of the first entry of an OpenAPI 3 `servers` list, with
    /// its variables replaced by their defaults; `None` when there is no
    /// list (or in Swagger 2.0, which has no `servers`).
    fn servers_base(
        &self,
        servers: Option<&Value>,
        at: &str,
    ) -> Result<Option<String>, ProfileError> {
        if self.version != Version::OpenApi3 {
            return Ok(None);
        }
        let first = match servers {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(list)) => match list.first() {
                None => return Ok(None),
                Some(first) => first,
            },
            Some(other) => {
                return Err(self.invalid(at, format!("expected a list, found {}", kind_of(other))))
            }
        };
        let at = format!("{at}[0]");
        let Some(url) = first.get("url").and_then(Value::as_str) else {
            return Err(self.invalid(format!("{at}.url"), "missing: a server needs a url"));
        };
        let url = substitute_variables(url, first.get("variables"))
            .map_err(|reason| self.invalid(format!("{at}.url"), reason))?;
        Ok(Some(normalize_base(url_path(&url))))
    }

    /// A path item, following a local `$ref` (`#/components/pathItems/x`)
    /// and laying the item's own fields over the referenced ones.
    fn resolve_path_item(
        &self,
        item: &Value,
        at: &str,
    ) -> Result<Map<String, Value>, ProfileError> {
        let Some(mut map) = item.as_object().cloned() else {
            return Err(self.invalid(
                at,
                format!("expected a path item mapping, found {}", kind_of(item)),
            ));
        };
        // A few hops at most; a longer chain is a loop.
        for _ in 0..8 {
            let Some(reference) = map.remove("$ref") else {
                return Ok(map);
            };
            let Some(reference) = reference.as_str() else {
                return Err(self.invalid(format!("{at}.$ref"), "expected a string"));
            };
            let Some(pointer) = reference.strip_prefix('#') else {
                return Err(self.invalid(
                    format!("{at}.$ref"),
                    format!(
                        "external reference {reference:?} is not supported: bundle the \
                         description into one file first"
                    ),
                ));
            };
            let target = self
                .doc
                .pointer(&percent_decode(pointer))
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    self.invalid(
                        format!("{at}.$ref"),
                        format!("{reference:?} does not point at a mapping in this document"),
                    )
                })?;
            let mut merged = target.clone();
            merged.extend(map);
            map = merged;
        }
        Err(self.invalid(format!("{at}.$ref"), "too many nested references (a loop?)"))
    }

    /// Linkerd's `x-linkerd-retryable` extension.
    fn retryable(&self, op: &Map<String, Value>, at: &str) -> Result<bool, ProfileError> {
        match op.get("x-linkerd-retryable") {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.invalid(
                format!("{at}.x-linkerd-retryable"),
                format!("expected true or false, found {other}"),
            )),
        }
    }

    /// Linkerd's `x-linkerd-timeout` extension, checked as a Go duration.
    fn timeout(&self, op: &Map<String, Value>, at: &str) -> Result<Option<String>, ProfileError> {
        let at = || format!("{at}.x-linkerd-timeout");
        match op.get("x-linkerd-timeout") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(t)) => match weft_smi_crds::parse_duration(t) {
                Ok(_) => Ok(Some(t.clone())),
                Err(e) => Err(self.invalid(at(), e.to_string())),
            },
            Some(other) => Err(self.invalid(
                at(),
                format!("expected a duration string such as \"300ms\", found {other}"),
            )),
        }
    }
}

/// How a value is described in messages.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// `{name}` in a server URL replaced by `variables.name.default`.
fn substitute_variables(url: &str, variables: Option<&Value>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = url;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {url:?}"))?;
        let name = &after[..close];
        let value = variables
            .and_then(|v| v.get(name))
            .and_then(|v| v.get("default"))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("variable {{{name}}} in {url:?} has no default in variables"))?;
        out.push_str(value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The path part of a server URL: absolute (`https://host/v1`),
/// scheme-relative (`//host/v1`) or relative (`/v1`).
fn url_path(url: &str) -> &str {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    let after_authority = if let Some(i) = url.find("://") {
        &url[i + 3..]
    } else if let Some(rest) = url.strip_prefix("//") {
        rest
    } else {
        return url;
    };
    match after_authority.find('/') {
        Some(i) => &after_authority[i..],
        None => "",
    }
}

/// A base path with one leading and no trailing slash (`""` for the root).
fn normalize_base(base: &str) -> String {
    let base = base.trim();
    let base = base.strip_prefix('.').unwrap_or(base);
    let trimmed = base.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

/// The request path template: base path plus the path key (which the
/// specification requires to start with `/`; a missing one is added).
fn join_path(base: &str, key: &str) -> String {
    if key.starts_with('/') {
        format!("{base}{key}")
    } else {
        format!("{base}/{key}")
    }
}

/// The `pathRegex` for a path template: literal text escaped, each
/// `{param}` one path segment (`[^/]*`), as Linkerd generates it.
fn path_regex(base: &str, key: &str) -> Result<String, String> {
    let template = join_path("", key);
    let mut out = escape_literal(base);
    let mut rest = template.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&escape_literal(&rest[..open]));
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in the path template {key:?}"))?;
        out.push_str("[^/]*");
        rest = &after[close + 1..];
    }
    out.push_str(&escape_literal(rest));
    Ok(out)
}

/// Escapes the characters that mean something in a regex outside a class,
/// and only those, so generated regexes stay readable (`/books\.json`).
fn escape_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Decodes `%XX` in a `$ref` fragment (`#/paths/~1books~1%7Bid%7D`).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                // Two hex digits always fit in a byte.
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sort key putting more specific paths first, because the first matching
/// route wins. Paths with different segment counts never match the same
/// request (a parameter never spans a `/`), so segments are compared in
/// order: a literal segment before one with a parameter, and among those
/// with parameters the one with more literal text first
/// (`/books/{id}.json` before `/books/{id}`); ties go alphabetically.
fn specificity(path: &str) -> Vec<(bool, Reverse<usize>, &str)> {
    path.split('/')
        .map(|segment| {
            let mut literal = 0;
            let mut in_param = false;
            for c in segment.chars() {
                match c {
                    '{' => in_param = true,
                    '}' => in_param = false,
                    _ if !in_param => literal += 1,
                    _ => {}
                }
            }
            let templated = segment.contains('{');
            // Literal segments never overlap unless equal: alphabetical only.
            let literal = if templated { literal } else { 0 };
            (templated, Reverse(literal), segment)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn routes_by_name(spec: &ServiceProfileSpec) -> std::collections::BTreeMap<&str, &RouteSpec> {
        spec.routes.iter().map(|r| (r.name.as_str(), r)).collect()
    }

    fn spec_of(text: &str) -> Result<ServiceProfileSpec, ProfileError> {
        let doc = parse_description(text, "test")?;
        OpenApi::new(&doc, "test")?.profile_spec()
    }

    #[test]
    fn path_templates_become_segment_regexes() {
        assert_eq!(path_regex("", "/books/{id}").unwrap(), "/books/[^/]*");
        assert_eq!(
            path_regex("/api/v1.0", "/books/{id}.json").unwrap(),
            r"/api/v1\.0/books/[^/]*\.json"
        );
        assert_eq!(
            path_regex("", "/a+b/(x)/{p}{q}/[c]|d^$*?").unwrap(),
            r"/a\+b/\(x\)/[^/]*[^/]*/\[c\]\|d\^\$\*\?"
        );
        assert!(path_regex("", "/books/{id").is_err());
        // Every generated regex compiles and matches its own template shape.
        let re =
            weft_smi_crds::profile::compile_anchored(&path_regex("", "/a+b/{p}.json").unwrap())
                .unwrap();
        assert!(re.is_match("/a+b/x.json"));
        assert!(!re.is_match("/aab/x.json"));
        assert!(!re.is_match("/a+b/x/y.json"));
    }

    #[test]
    fn server_urls_give_base_paths() {
        assert_eq!(url_path("https://api.example.com/shop/v2?x=1"), "/shop/v2");
        assert_eq!(url_path("http://localhost:8080"), "");
        assert_eq!(url_path("//host/v1/"), "/v1/");
        assert_eq!(url_path("/v1"), "/v1");
        assert_eq!(normalize_base("/v1/"), "/v1");
        assert_eq!(normalize_base("/"), "");
        assert_eq!(normalize_base("./v1"), "/v1");
        assert_eq!(normalize_base("v1"), "/v1");
        let vars: Value = serde_json::json!({"base": {"default": "v3"}});
        assert_eq!(
            substitute_variables("https://{base}.example/{base}", Some(&vars)).unwrap(),
            "https://v3.example/v3"
        );
        assert!(substitute_variables("https://x/{nope}", Some(&vars))
            .unwrap_err()
            .contains("{nope}"));
    }

    #[test]
    fn specific_paths_sort_first() {
        let mut paths = vec![
            "/books/{id}",
            "/books/{id}.json",
            "/books/new",
            "/books",
            "/authors/{id}/books",
            "/books/{id}/reviews",
            "/a-much-longer-literal",
        ];
        paths.sort_by_key(|p| specificity(p));
        assert_eq!(
            paths,
            [
                "/a-much-longer-literal",
                "/authors/{id}/books",
                "/books",
                "/books/new",
                "/books/{id}.json",
                "/books/{id}",
                "/books/{id}/reviews",
            ]
        );
    }

    #[test]
    fn yaml_with_integer_keys_and_version_numbers_reads() {
        let spec = spec_of(
            "swagger: 2.0\npaths:\n  /a:\n    get:\n      responses:\n        200: {description: ok}\n",
        )
        .unwrap();
        assert_eq!(spec.routes[0].name, "GET /a");
    }

    #[test]
    fn local_refs_are_followed_and_external_ones_refused() {
        let spec = spec_of(
            r##"{"openapi": "3.1.0",
                "paths": {"/b/{id}": {"$ref": "#/components/pathItems/B", "put": {}}},
                "components": {"pathItems": {"B": {"get": {"x-linkerd-retryable": true}}}}}"##,
        )
        .unwrap();
        let routes = routes_by_name(&spec);
        assert!(routes["GET /b/{id}"].is_retryable);
        assert!(routes.contains_key("PUT /b/{id}"));
        let e = spec_of(r#"{"openapi": "3.0.0", "paths": {"/b": {"$ref": "other.yaml#/B"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("external reference"), "{e}");
        let e = spec_of(r##"{"openapi": "3.0.0", "paths": {"/b": {"$ref": "#/nope"}}}"##)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not point at"), "{e}");
        assert_eq!(percent_decode("/paths/~1b~1%7Bid%7D"), "/paths/~1b~1{id}");
    }

    #[test]
    fn template_renders_every_note() {
        let profile = new_profile("web.shop.svc.cluster.local", "shop", template_spec());
        let yaml = render_template(&profile, "web", "shop").unwrap();
        check_output(&yaml, &profile).unwrap();
        for (key, note) in TEMPLATE_NOTES {
            let first = note.lines().next().unwrap();
            assert!(yaml.contains(first), "note for {key} missing:\n{yaml}");
        }
    }
}
