//! `weft profile` as a user runs it: the real binary on sample Swagger 2.0
//! and OpenAPI 3 descriptions (JSON and YAML, from files and stdin). The
//! output is read back with `weft-smi-crds`, the way the controller reads
//! it, and its regexes are tried on sample paths with the same anchoring
//! the proxy uses.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::PathBuf;
use std::process::Output;
use weft_smi_crds::profile::{compile_anchored, RetryBudget, RouteSpec};
use weft_smi_crds::{parse_documents, AnyObject, ServiceProfile};
use weft_test_support::command::{self, describe};

fn weft(args: &[&str]) -> Output {
    command::run(env!("CARGO_BIN_EXE_weft"), args).unwrap()
}

fn weft_stdin(args: &[&str], input: &str) -> Output {
    command::run_with_stdin(env!("CARGO_BIN_EXE_weft"), args, input).unwrap()
}

fn data(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "data", "openapi", name]
        .iter()
        .collect();
    path.to_str().unwrap().to_owned()
}

/// `weft profile --open-api` on the sample description `file`, then `args`
/// (the Service and options).
fn open_api(file: &str, args: &[&str]) -> Output {
    let file = data(file);
    weft(&[&["profile", "--open-api", file.as_str()], args].concat())
}

/// Asserts that `p` is the profile of the Service named `fqdn`, in
/// namespace `ns`.
fn assert_for(p: &ServiceProfile, fqdn: &str, ns: &str) {
    assert_eq!(p.metadata.name.as_deref(), Some(fqdn));
    assert_eq!(p.metadata.namespace.as_deref(), Some(ns));
}

/// The one valid ServiceProfile a successful run printed.
fn profile(out: &Output) -> ServiceProfile {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    let yaml = String::from_utf8(out.stdout.clone()).unwrap();
    let mut docs = parse_documents(&yaml).unwrap();
    assert_eq!(docs.len(), 1, "{yaml}");
    let AnyObject::ServiceProfile(p) = docs.remove(0) else {
        panic!("not a ServiceProfile:\n{yaml}")
    };
    p.validate().unwrap();
    *p
}

/// `(name, method, pathRegex, isRetryable, timeout)` of every route.
fn summary(p: &ServiceProfile) -> Vec<(&str, &str, &str, bool, Option<&str>)> {
    p.spec
        .routes
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.condition.method.as_deref().unwrap(),
                r.condition.path_regex.as_deref().unwrap(),
                r.is_retryable,
                r.timeout.as_deref(),
            )
        })
        .collect()
}

/// The route a request would take: the first whose method and anchored
/// regex match, as the proxy picks it.
fn route_for<'a>(p: &'a ServiceProfile, method: &str, path: &str) -> Option<&'a str> {
    p.spec
        .routes
        .iter()
        .find(|r| matches(r, method, path))
        .map(|r| r.name.as_str())
}

fn matches(r: &RouteSpec, method: &str, path: &str) -> bool {
    let re = compile_anchored(r.condition.path_regex.as_deref().unwrap()).unwrap();
    r.condition.method.as_deref() == Some(method) && re.is_match(path)
}

#[test]
fn swagger2_json_routes_follow_paths_methods_and_extensions() {
    let p = profile(&open_api("books-v2.json", &["books", "-n", "shop"]));
    assert_for(&p, "books.shop.svc.cluster.local", "shop");
    // basePath "/api/v1/" prefixes every route; specific paths come first.
    assert_eq!(
        summary(&p),
        [
            (
                "GET /api/v1/books",
                "GET",
                "/api/v1/books",
                true,
                Some("2s")
            ),
            ("POST /api/v1/books", "POST", "/api/v1/books", false, None),
            (
                "GET /api/v1/books/new",
                "GET",
                "/api/v1/books/new",
                false,
                Some("300ms")
            ),
            (
                "GET /api/v1/books/{id}.json",
                "GET",
                r"/api/v1/books/[^/]*\.json",
                false,
                None
            ),
            (
                "DELETE /api/v1/books/{id}",
                "DELETE",
                "/api/v1/books/[^/]*",
                false,
                None
            ),
            (
                "GET /api/v1/books/{id}",
                "GET",
                "/api/v1/books/[^/]*",
                true,
                None
            ),
            (
                "HEAD /api/v1/search+index/(all)",
                "HEAD",
                r"/api/v1/search\+index/\(all\)",
                false,
                None
            ),
        ]
    );
    assert!(p.spec.retry_budget.is_none());
    assert!(p.spec.routes.iter().all(|r| r.response_classes.is_empty()));

    // Requests land on the route a reader of the API would expect.
    for (method, path, want) in [
        ("GET", "/api/v1/books", Some("GET /api/v1/books")),
        ("GET", "/api/v1/books/new", Some("GET /api/v1/books/new")),
        ("GET", "/api/v1/books/42", Some("GET /api/v1/books/{id}")),
        ("GET", "/api/v1/books/", Some("GET /api/v1/books/{id}")),
        (
            "GET",
            "/api/v1/books/42.json",
            Some("GET /api/v1/books/{id}.json"),
        ),
        (
            "DELETE",
            "/api/v1/books/42",
            Some("DELETE /api/v1/books/{id}"),
        ),
        (
            "HEAD",
            "/api/v1/search+index/(all)",
            Some("HEAD /api/v1/search+index/(all)"),
        ),
        // A parameter is one segment; literal text is literal; anchored.
        ("GET", "/api/v1/books/42/reviews", None),
        ("GET", "/api/v1/books/42xjson/x", None),
        ("HEAD", "/api/v1/searchhindex/all", None),
        ("HEAD", "/api/v1/search+index/all", None),
        ("GET", "/books/42", None),
        ("GET", "/v2/api/v1/books", None),
        ("PUT", "/api/v1/books/42", None),
    ] {
        assert_eq!(route_for(&p, method, path), want, "{method} {path}");
    }
    let json_route = &p.spec.routes[3];
    assert!(!matches(json_route, "GET", "/api/v1/books/42xjson"));
}

#[test]
fn swagger2_yaml_gives_the_same_profile_as_json() {
    let json = open_api("books-v2.json", &["books", "-n", "shop"]);
    let yaml = open_api("books-v2.yaml", &["books", "--namespace", "shop"]);
    assert_eq!(profile(&yaml), profile(&json));
    assert_eq!(yaml.stdout, json.stdout, "byte-identical output");
}

#[test]
fn openapi3_yaml_uses_server_paths_refs_and_all_methods() {
    let p = profile(&open_api("petstore-v3.yaml", &["pets"]));
    // -n defaults to "default".
    assert_for(&p, "pets.default.svc.cluster.local", "default");
    // First server URL, variables at their defaults: /store/v2. /health
    // has its own server list ("/").
    assert_eq!(
        summary(&p),
        [
            ("GET /health", "GET", "/health", false, Some("100ms")),
            (
                "GET /store/v2/owners/{ownerId}",
                "GET",
                "/store/v2/owners/[^/]*",
                true,
                None
            ),
            (
                "PUT /store/v2/owners/{ownerId}",
                "PUT",
                "/store/v2/owners/[^/]*",
                false,
                None
            ),
            ("GET /store/v2/pets", "GET", "/store/v2/pets", true, None),
            (
                "POST /store/v2/pets",
                "POST",
                "/store/v2/pets",
                false,
                Some("1m30s")
            ),
            (
                "GET /store/v2/pets/{petId}",
                "GET",
                "/store/v2/pets/[^/]*",
                false,
                None
            ),
            (
                "PATCH /store/v2/pets/{petId}",
                "PATCH",
                "/store/v2/pets/[^/]*",
                false,
                None
            ),
            (
                "TRACE /store/v2/pets/{petId}",
                "TRACE",
                "/store/v2/pets/[^/]*",
                false,
                None
            ),
            (
                "GET /store/v2/pets/{petId}/photos/{photoId}.png",
                "GET",
                r"/store/v2/pets/[^/]*/photos/[^/]*\.png",
                false,
                None
            ),
        ]
    );
    for (method, path, want) in [
        ("GET", "/health", Some("GET /health")),
        ("GET", "/store/v2/health", None),
        (
            "GET",
            "/store/v2/pets/7",
            Some("GET /store/v2/pets/{petId}"),
        ),
        (
            "GET",
            "/store/v2/pets/7/photos/1.png",
            Some("GET /store/v2/pets/{petId}/photos/{photoId}.png"),
        ),
        ("GET", "/store/v2/pets/7/photos/1.jpg", None),
        ("GET", "/store/v2/pets/7/photos/1/png", None),
        (
            "PUT",
            "/store/v2/owners/ann",
            Some("PUT /store/v2/owners/{ownerId}"),
        ),
        ("GET", "/pets", None),
    ] {
        assert_eq!(route_for(&p, method, path), want, "{method} {path}");
    }
}

#[test]
fn openapi3_json_from_stdin_with_cluster_domain() {
    let spec = std::fs::read_to_string(data("petstore-v3.json")).unwrap();
    let out = weft_stdin(
        &[
            "profile",
            "--open-api",
            "-",
            "pets",
            "-n",
            "zoo",
            "--cluster-domain",
            "corp.example",
        ],
        &spec,
    );
    let p = profile(&out);
    assert_eq!(
        p.metadata.name.as_deref(),
        Some("pets.zoo.svc.corp.example")
    );
    assert_eq!(
        summary(&p),
        [
            ("GET /v3/pets", "GET", "/v3/pets", true, None),
            ("OPTIONS /v3/pets", "OPTIONS", "/v3/pets", false, None),
            ("GET /v3/pets/mine", "GET", "/v3/pets/mine", false, None),
            (
                "PUT /v3/pets/{petId}",
                "PUT",
                "/v3/pets/[^/]*",
                false,
                Some("5s")
            ),
        ]
    );
    assert_eq!(
        route_for(&p, "PUT", "/v3/pets/mine"),
        Some("PUT /v3/pets/{petId}")
    );
}

#[test]
fn template_is_a_commented_valid_profile() {
    let out = weft(&["profile", "--template", "web", "-n", "shop"]);
    let p = profile(&out);
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert_for(&p, "web.shop.svc.cluster.local", "shop");
    // Linkerd's default budget: 20 %, 10 retries/s, 10 s.
    assert_eq!(
        p.spec.retry_budget,
        Some(RetryBudget {
            retry_ratio: 0.2,
            min_retries_per_second: 10,
            ttl: Some("10s".to_owned()),
        })
    );
    assert_eq!(
        summary(&p),
        [
            (
                "GET /books/{id}",
                "GET",
                "/books/[^/]*",
                true,
                Some("300ms")
            ),
            ("POST /books", "POST", "/books", false, None),
        ]
    );
    let class = &p.spec.routes[1].response_classes[0];
    assert!(class.is_failure);
    let status = class.condition.status.as_ref().unwrap();
    assert_eq!((status.min, status.max), (Some(500), Some(599)));
    assert_eq!(route_for(&p, "GET", "/books/7"), Some("GET /books/{id}"));
    assert_eq!(route_for(&p, "GET", "/books/7/x"), None);

    // Commented: a header and notes on every field kind.
    assert!(
        yaml.starts_with("# ServiceProfile for the Service \"web\""),
        "{yaml}"
    );
    for note in [
        "# Routes name groups of requests",
        "# Which requests belong to the route",
        "#   all:",
        "# Retry failed requests",
        "# Give up on a request",
        "# Response classes decide",
        "# Retries to this service may add at most retryRatio",
        "# opaquePorts:",
    ] {
        assert!(yaml.contains(note), "missing {note:?}:\n{yaml}");
    }
    let comments = yaml.lines().filter(|l| l.trim_start().starts_with('#'));
    assert!(comments.count() > 30, "{yaml}");

    let other = profile(&weft(&[
        "profile",
        "--template",
        "api",
        "--cluster-domain",
        "k8s.internal",
    ]));
    assert_eq!(
        other.metadata.name.as_deref(),
        Some("api.default.svc.k8s.internal")
    );
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let file = |name: &str, body: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let missing = tmp.path().join("nope.yaml");
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            missing.to_str().unwrap().to_owned(),
            vec!["cannot read", "nope.yaml", "No such file"],
        ),
        (
            file("trunc.json", "{\"swagger\": \"2.0\",\n \"paths\": {"),
            vec!["trunc.json is not valid JSON", "line 2"],
        ),
        (
            file("bad.yaml", "openapi: 3.0.0\npaths:\n  /a: [\n"),
            vec!["bad.yaml is not valid YAML", "line"],
        ),
        (
            file("other.json", "{\"kind\": \"Service\"}"),
            vec!["is not an OpenAPI description", "swagger", "openapi"],
        ),
        (
            file("list.yaml", "- a\n- b\n"),
            vec!["is not an OpenAPI description", "found a list"],
        ),
        (
            file("old.json", "{\"swagger\": \"1.2\", \"paths\": {}}"),
            vec!["swagger version \"1.2\" is not supported"],
        ),
        (
            file("v4.yaml", "openapi: 4.0.0\npaths: {}\n"),
            vec!["openapi version \"4.0.0\" is not supported"],
        ),
        (
            file("nopaths.yaml", "openapi: 3.1.0\ninfo: {title: x, version: '1'}\n"),
            vec!["nopaths.yaml: no paths"],
        ),
        (
            file("empty-paths.json", "{\"swagger\": \"2.0\", \"paths\": {}}"),
            vec!["no paths"],
        ),
        (
            file(
                "noops.yaml",
                "swagger: '2.0'\npaths:\n  /a:\n    parameters: []\n  /b: {}\n",
            ),
            vec!["no operations", "2 path(s)"],
        ),
        (
            file(
                "timeout.yaml",
                "swagger: '2.0'\npaths:\n  /a/{id}:\n    get:\n      x-linkerd-timeout: 5 seconds\n",
            ),
            vec![
                "paths[\"/a/{id}\"].get.x-linkerd-timeout",
                "invalid duration \"5 seconds\"",
            ],
        ),
        (
            file(
                "retry.yaml",
                "swagger: '2.0'\npaths:\n  /a:\n    post:\n      x-linkerd-retryable: 'yes'\n",
            ),
            vec![
                "paths[\"/a\"].post.x-linkerd-retryable",
                "expected true or false",
            ],
        ),
        (
            file(
                "ref.yaml",
                "openapi: 3.0.0\npaths:\n  /a:\n    $ref: 'common.yaml#/paths/~1a'\n",
            ),
            vec!["paths[\"/a\"].$ref", "external reference", "bundle"],
        ),
        (
            file(
                "vars.yaml",
                "openapi: 3.0.0\nservers:\n- url: https://x/{base}\npaths:\n  /a:\n    get: {}\n",
            ),
            vec!["servers[0].url", "{base}", "no default"],
        ),
        (
            file(
                "brace.yaml",
                "swagger: '2.0'\npaths:\n  /a/{id:\n    get: {}\n",
            ),
            vec!["unclosed '{'"],
        ),
        (
            file("op.json", "{\"swagger\": \"2.0\", \"paths\": {\"/a\": {\"get\": true}}}"),
            vec!["paths[\"/a\"].get", "expected an operation object"],
        ),
    ];
    for (path, fragments) in cases {
        let out = weft(&["profile", "--open-api", &path, "web"]);
        assert_eq!(out.status.code(), Some(1), "{path}: {}", describe(&out));
        assert!(out.stdout.is_empty(), "{path}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("weft: "), "{}", describe(&out));
        assert_eq!(stderr.lines().count(), 1, "one line: {}", describe(&out));
        for fragment in fragments {
            assert!(
                stderr.contains(fragment),
                "{fragment:?} in {}",
                describe(&out)
            );
        }
    }

    let out = weft_stdin(&["profile", "--open-api", "-", "web"], "");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("<stdin> is not an OpenAPI description: the input is empty"),
        "{}",
        describe(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    let spec = data("books-v2.json");
    for args in [
        vec!["profile", "web"],
        vec!["profile", "--template", "--open-api", &spec, "web"],
        vec!["profile", "--template"],
        vec!["profile", "--open-api", &spec],
        vec!["profile", "--template", "Web_1"],
        vec!["profile", "--template", "1web"],
        vec!["profile", "--template", "web", "-n", "Shop"],
        vec![
            "profile",
            "--template",
            "web",
            "--cluster-domain",
            "cluster..local",
        ],
        vec!["profile", "--template", "web", "extra"],
    ] {
        let out = weft(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(out.stdout.is_empty(), "{args:?}: {}", describe(&out));
    }
    let out = weft(&["profile", "--template", "Web_1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a Service name"),
        "{}",
        describe(&out)
    );
}

#[test]
fn help_explains_both_modes() {
    let out = weft(&["profile", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--template",
        "--open-api <FILE>",
        "Swagger 2.0 or OpenAPI 3",
        "`-` reads stdin",
        "METHOD /path/{param}",
        "[^/]*",
        "basePath",
        "server URL",
        "x-linkerd-retryable: true",
        "x-linkerd-timeout",
        "retryRatio 0.2, minRetriesPerSecond 10, ttl 10s",
        "--cluster-domain <DOMAIN>",
        "[default: cluster.local]",
        "-n, --namespace",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
    let out = weft(&["--help"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("profile"),
        "{}",
        describe(&out)
    );
}
