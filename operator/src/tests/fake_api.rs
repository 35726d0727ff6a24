//! An in-memory Kubernetes API server for reconciler tests: enough of GET, LIST, POST,
//! PUT, DELETE and the three PATCH flavours (server-side apply, merge, JSON patch) for the
//! kinds the operator touches, with `managedFields` bookkeeping close enough to the real
//! thing for the applied-hash + ownership check. Every request is logged, so tests can
//! assert which writes a reconcile made; failures can be injected per request. LIST with
//! `watch=true` streams ADDED/MODIFIED/DELETED events of later changes (no bookmarks, no
//! replay from a resourceVersion), enough for a kube-runtime Controller to run against it.
//!
//! Every request is checked against the operator's RBAC table (`permits`, from the parent
//! module): one it does not allow is answered 403, as a real API server would answer the
//! chart's ServiceAccount, and recorded (`forbidden`).
//!
//! `examples/bench.rs` includes this file with `#[path]`, so it names nothing of the crate
//! but `MANAGER` and `permits`, which it takes from its parent module.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body as ResponseBody;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::{MANAGER, permits};

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
}

impl Logged {
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
    /// `PATCH deployments/demo-auth`, for readable assertions.
    pub fn short(&self) -> String {
        let parts: Vec<&str> = self.path.split('/').collect();
        let tail = parts
            .iter()
            .position(|p| *p == "namespaces")
            .map(|i| parts[i + 2..].join("/"))
            .unwrap_or_else(|| self.path.clone());
        format!("{} {tail}", self.method)
    }
}

#[derive(Debug, Clone)]
struct Failure {
    method: Method,
    path_contains: String,
    code: u16,
    remaining: Option<usize>,
}

#[derive(Debug, Default)]
struct State {
    /// (plural, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    log: Vec<Logged>,
    failures: Vec<Failure>,
    /// Requests the RBAC table does not allow, as `verb group/resource`.
    forbidden: Vec<String>,
    /// API groups served beyond the built-in ones (CRDs), as discovery lists them:
    /// `group/version` → (kind, plural) pairs.
    discovery: BTreeMap<String, Vec<(String, String)>>,
    resource_version: u64,
    uid: u64,
}

/// One change, as a watch reports it.
#[derive(Debug, Clone)]
struct Change {
    plural: String,
    namespace: String,
    type_: &'static str,
    object: Value,
}

/// Changes buffered per watcher before it lags (and its stream ends, as the API server
/// ends a watch that falls behind).
const WATCH_BUFFER: usize = 4096;

#[derive(Debug, Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<Change>,
}

impl Default for FakeApi {
    fn default() -> Self {
        FakeApi {
            state: Arc::default(),
            changes: broadcast::channel(WATCH_BUFFER).0,
        }
    }
}

type Key = (String, String, String);

/// The `labelSelector` of a query as `key=value` pairs (equality only).
fn selector_of(query: &str) -> Vec<(String, String)> {
    query_param(query, "labelSelector")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// An object as `PartialObjectMetadata`, what a metadata-only GET, LIST or watch returns.
fn metadata_only(object: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
           "metadata": object["metadata"].clone()})
}

fn selected(object: &Value, selector: &[(String, String)]) -> bool {
    selector
        .iter()
        .all(|(k, v)| object["metadata"]["labels"][k] == json!(v))
}

/// Parsed `/api/v1/namespaces/ns/plural/name/sub` or `/apis/g/v/namespaces/...`.
#[derive(Debug)]
struct Target {
    group_version: String,
    namespace: String,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

impl Target {
    /// The API group (`""` for the core group).
    fn group(&self) -> &str {
        self.group_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }

    /// `plural` or `plural/subresource`, as RBAC names it.
    fn resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.plural),
            None => self.plural.clone(),
        }
    }
}

/// The RBAC verbs a request needs: a server-side apply that creates its object needs
/// `create` as well as `patch`.
fn rbac_verbs(method: &Method, t: &Target, watch: bool, creates: bool) -> Vec<&'static str> {
    let verb = match (method.as_str(), t.name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    };
    if creates {
        vec![verb, "create"]
    } else {
        vec![verb]
    }
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (gv, rest) = match *segs.first()? {
        "api" => (segs.get(1)?.to_string(), &segs[2..]),
        "apis" => (format!("{}/{}", segs.get(1)?, segs.get(2)?), &segs[3..]),
        _ => return None,
    };
    if rest.first() != Some(&"namespaces") {
        return None;
    }
    Some(Target {
        group_version: gv,
        namespace: rest.get(1)?.to_string(),
        plural: rest.get(2)?.to_string(),
        name: rest.get(3).map(|s| s.to_string()),
        subresource: rest.get(4).map(|s| s.to_string()),
    })
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/")
        })
    })
}

/// The fieldsV1 a manager gets for applying `v` (every list treated as atomic).
fn fields_of(v: &Value, top: bool) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, child) in map {
                if top && matches!(k.as_str(), "apiVersion" | "kind" | "status") {
                    continue;
                }
                if top && k == "metadata" {
                    let mut meta = Map::new();
                    if let Some(m) = child.as_object() {
                        for (mk, mv) in m {
                            if matches!(
                                mk.as_str(),
                                "labels" | "annotations" | "ownerReferences" | "finalizers"
                            ) {
                                meta.insert(format!("f:{mk}"), fields_of(mv, false));
                            }
                        }
                    }
                    out.insert("f:metadata".into(), Value::Object(meta));
                    continue;
                }
                out.insert(format!("f:{k}"), fields_of(child, false));
            }
            Value::Object(out)
        }
        _ => json!({}),
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl FakeApi {
    /// A fake API server and a client talking to it.
    pub fn new() -> (FakeApi, Client) {
        let fake = FakeApi::default();
        let handler = fake.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let fake = handler.clone();
            async move { Ok::<_, std::convert::Infallible>(fake.handle(req).await) }
        });
        (fake, Client::new(service, "default"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the watchers how `key` changed from `before` to `after`.
    fn notify(&self, key: &Key, before: Option<Value>, after: Option<Value>) {
        let (type_, object) = match (before, after) {
            (None, Some(now)) => ("ADDED", now),
            (Some(old), Some(now)) if old != now => ("MODIFIED", now),
            (Some(old), None) => ("DELETED", old),
            _ => return,
        };
        // No receiver is fine: nobody watches.
        let _ = self.changes.send(Change {
            plural: key.0.clone(),
            namespace: key.1.clone(),
            type_,
            object,
        });
    }

    /// A watch of `plural` in `namespace`: one JSON line per later change that `selector`
    /// matches.
    fn watch(
        &self,
        plural: String,
        namespace: String,
        selector: Vec<(String, String)>,
        as_metadata: bool,
    ) -> ResponseBody {
        let changes = self.changes.subscribe();
        let lines = futures::stream::unfold(changes, move |mut changes| {
            let (plural, namespace, selector) =
                (plural.clone(), namespace.clone(), selector.clone());
            async move {
                loop {
                    // A lagging or closed channel ends the watch; the client watches again.
                    let change = changes.recv().await.ok()?;
                    if change.plural == plural
                        && change.namespace == namespace
                        && selected(&change.object, &selector)
                    {
                        let object = if as_metadata {
                            metadata_only(&change.object)
                        } else {
                            change.object
                        };
                        let mut line =
                            serde_json::to_vec(&json!({"type": change.type_, "object": object}))
                                .unwrap_or_default();
                        line.push(b'\n');
                        return Some((Ok::<_, std::convert::Infallible>(line), changes));
                    }
                }
            }
        });
        ResponseBody::from_stream(lines)
    }

    /// Every request since the last `clear_log`.
    pub fn requests(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    /// The writes since the last `clear_log`, as `METHOD plural/name[/sub]`.
    pub fn writes(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r.is_write())
            .map(Logged::short)
            .collect()
    }

    /// The writes other than events.
    pub fn child_writes(&self) -> Vec<String> {
        let mut w: Vec<String> = self
            .writes()
            .into_iter()
            .filter(|w| !w.contains(" events"))
            .collect();
        w.sort();
        w
    }

    /// The requests refused because the operator's RBAC table does not allow them.
    pub fn forbidden(&self) -> Vec<String> {
        self.lock().forbidden.clone()
    }

    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    /// Makes requests whose method is `method` and whose path contains `path_contains`
    /// fail with `code`, `times` times (forever when `None`).
    pub fn fail(&self, method: Method, path_contains: &str, code: u16, times: Option<usize>) {
        self.lock().failures.push(Failure {
            method,
            path_contains: path_contains.to_string(),
            code,
            remaining: times,
        });
    }

    pub fn clear_failures(&self) {
        self.lock().failures.clear();
    }

    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(plural.into(), namespace.into(), name.into()))
            .cloned()
    }

    pub fn names(&self, plural: &str) -> Vec<String> {
        self.lock()
            .objects
            .keys()
            .filter(|(p, _, _)| p == plural)
            .map(|(_, _, n)| n.clone())
            .collect()
    }

    /// Stores an object as if someone had created it (no managedFields of ours).
    pub fn insert(&self, plural: &str, mut object: Value) {
        let mut s = self.lock();
        s.resource_version += 1;
        s.uid += 1;
        let (rv, uid) = (s.resource_version, s.uid);
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        if meta.get("uid").is_none() {
            meta["uid"] = json!(format!("uid-{uid}"));
        }
        let key = (
            plural.to_string(),
            meta["namespace"].as_str().unwrap_or("default").to_string(),
            meta["name"].as_str().unwrap_or_default().to_string(),
        );
        let before = s.objects.insert(key.clone(), object.clone());
        drop(s);
        self.notify(&key, before, Some(object));
    }

    pub fn remove(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (plural.into(), namespace.into(), name.into());
        let removed = self.lock().objects.remove(&key);
        self.notify(&key, removed.clone(), None);
        removed
    }

    /// Changes an object by JSON merge patch, as a controller or a person would, with
    /// `manager` taking ownership of the changed fields away from ours.
    pub fn edit(&self, plural: &str, namespace: &str, name: &str, manager: &str, patch: Value) {
        let key: Key = (plural.into(), namespace.into(), name.into());
        let mut s = self.lock();
        s.resource_version += 1;
        let rv = s.resource_version;
        let Some(obj) = s.objects.get_mut(&key) else {
            panic!("no {plural}/{name} to edit");
        };
        let before = obj.clone();
        merge_patch(obj, &patch);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let taken = fields_of(&patch, true);
        if let Some(entries) = obj["metadata"]["managedFields"].as_array_mut() {
            for e in entries.iter_mut() {
                if e["manager"] == MANAGER {
                    subtract(&mut e["fieldsV1"], &taken);
                }
            }
            entries.push(json!({"manager": manager, "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": taken}));
        }
        let after = obj.clone();
        drop(s);
        self.notify(&key, Some(before), Some(after));
    }

    /// Sets an object's status, as its controller would (a new resourceVersion, as every
    /// write gets).
    pub fn set_status(&self, plural: &str, namespace: &str, name: &str, status: Value) {
        let key: Key = (plural.into(), namespace.into(), name.into());
        let mut s = self.lock();
        let rv = s.resource_version + 1;
        let Some(obj) = s.objects.get_mut(&key) else {
            return;
        };
        let before = obj.clone();
        obj["status"] = status;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let after = obj.clone();
        s.resource_version = rv;
        drop(s);
        self.notify(&key, Some(before), Some(after));
    }

    /// Serves discovery for `group_version` (e.g. `monitoring.coreos.com/v1`) listing
    /// `kinds` as (kind, plural): as if those CRDs were installed.
    pub fn serve_kinds(&self, group_version: &str, kinds: &[(&str, &str)]) {
        self.lock().discovery.insert(
            group_version.to_string(),
            kinds
                .iter()
                .map(|(k, p)| (k.to_string(), p.to_string()))
                .collect(),
        );
    }

    /// The `APIResourceList` of `/apis/<group>/<version>`, for the groups [`serve_kinds`]
    /// installed; `None` for every other path.
    fn discovery(&self, path: &str) -> Option<Value> {
        let gv = path.strip_prefix("/apis/")?;
        let kinds = self.lock().discovery.get(gv)?.clone();
        let resources: Vec<Value> = kinds
            .iter()
            .map(|(kind, plural)| {
                json!({"name": plural, "singularName": kind.to_lowercase(), "namespaced": true,
                       "kind": kind, "verbs": ["delete", "get", "list", "patch", "create", "update", "watch"]})
            })
            .collect();
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                    "resources": resources}),
        )
    }

    async fn handle(&self, req: Request<Body>) -> Response<ResponseBody> {
        if req.method() == Method::GET
            && let Some(list) = self.discovery(req.uri().path())
        {
            self.lock().log.push(Logged {
                method: "GET".into(),
                path: req.uri().path().to_string(),
                query: String::new(),
                content_type: String::new(),
            });
            return Response::builder()
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(ResponseBody::from(
                    serde_json::to_vec(&list).unwrap_or_default(),
                ))
                .unwrap_or_else(|_| Response::new(ResponseBody::empty()));
        }
        let (parts, body) = req.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let target = parse_path(&path);
        // The object a write may change, to tell the watchers about it afterwards.
        let key: Option<Key> = target.as_ref().and_then(|t| {
            let name = match (&t.name, &parts.method) {
                (Some(name), _) => name.clone(),
                (None, &Method::POST) => body["metadata"]["name"].as_str()?.to_string(),
                _ => return None,
            };
            Some((t.plural.clone(), t.namespace.clone(), name))
        });
        let is_watch = matches!(query_param(&query, "watch").as_deref(), Some("true" | "1"));
        // `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`
        let as_metadata = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
        let (code, value, change) = {
            let mut s = self.lock();
            s.log.push(Logged {
                method: parts.method.to_string(),
                path: path.clone(),
                query: query.clone(),
                content_type: content_type.clone(),
            });
            let refused = target.as_ref().and_then(|t| {
                let creates = parts.method == Method::PATCH
                    && content_type.starts_with("application/apply-patch")
                    && key.as_ref().is_some_and(|k| !s.objects.contains_key(k));
                let missing = rbac_verbs(&parts.method, t, is_watch, creates)
                    .into_iter()
                    .find(|verb| !permits(t.group(), &t.resource(), verb))?;
                Some(format!("{missing} {}/{}", t.group(), t.resource()))
            });
            if let Some(refused) = refused {
                s.forbidden.push(refused.clone());
                let message = format!(
                    "forbidden: the operator's RBAC table (rbac.rs) does not allow {refused}"
                );
                let (code, value) = status(403, "Forbidden", &message);
                drop(s);
                return Response::builder()
                    .status(StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN))
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(ResponseBody::from(
                        serde_json::to_vec(&value).unwrap_or_default(),
                    ))
                    .unwrap_or_else(|_| Response::new(ResponseBody::empty()));
            }
            let failure = s.failures.iter_mut().find(|f| {
                f.method == parts.method
                    && path.contains(&f.path_contains)
                    && f.remaining != Some(0)
            });
            match (failure, &target) {
                (Some(f), _) => {
                    f.remaining = f.remaining.map(|n| n - 1);
                    let code = f.code;
                    let (code, value) = status(code, "InternalError", "injected failure");
                    (code, value, None)
                }
                (None, Some(t)) if is_watch && t.name.is_none() && parts.method == Method::GET => {
                    let watch = self.watch(
                        t.plural.clone(),
                        t.namespace.clone(),
                        selector_of(&query),
                        as_metadata,
                    );
                    return Response::builder()
                        .status(StatusCode::OK)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(watch)
                        .unwrap_or_else(|_| Response::new(ResponseBody::empty()));
                }
                (None, Some(t)) => {
                    let before = key.as_ref().and_then(|k| s.objects.get(k).cloned());
                    let (code, value) = s.serve(&parts.method, t, &query, &content_type, body);
                    let after = key.as_ref().and_then(|k| s.objects.get(k).cloned());
                    (code, value, Some((before, after)))
                }
                (None, None) => {
                    let (code, value) = status(404, "NotFound", "unknown path");
                    (code, value, None)
                }
            }
        };
        if let (Some(key), Some((before, after))) = (&key, change) {
            self.notify(key, before, after);
        }
        let value = match value.get("items").and_then(Value::as_array) {
            Some(items) if as_metadata && code == 200 => {
                let mut list = value.clone();
                list["apiVersion"] = json!("meta.k8s.io/v1");
                list["kind"] = json!("PartialObjectMetadataList");
                list["items"] = items.iter().map(metadata_only).collect();
                list
            }
            None if as_metadata && code == 200 => metadata_only(&value),
            _ => value,
        };
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(ResponseBody::from(
                serde_json::to_vec(&value).unwrap_or_default(),
            ))
            .unwrap_or_else(|_| Response::new(ResponseBody::empty()))
    }
}

/// The ports a Service would have after `manager` applies `body` to `live`: the applied
/// ones plus the live ports that another manager owns (an edit made them its own) and the
/// apply does not name, as server-side apply merges a list map keyed by port and protocol.
/// `None` for objects without ports.
fn merged_ports(live: &Value, body: &Value, manager: Option<&str>) -> Option<Value> {
    let applied = body.pointer("/spec/ports")?.as_array()?.clone();
    let someone_else_owns_ports = live["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| {
            e["manager"].as_str() != manager && e.pointer("/fieldsV1/f:spec/f:ports").is_some()
        });
    if !someone_else_owns_ports {
        return None;
    }
    let mut ports = applied.clone();
    for port in live.pointer("/spec/ports")?.as_array()? {
        if !applied.iter().any(|a| a["port"] == port["port"]) {
            ports.push(port.clone());
        }
    }
    Some(Value::Array(ports))
}

/// The API server's 422 for an object it would refuse: here, a Service with two ports of
/// one name (the validation a merged hand edit trips most often).
fn invalid(t: &Target, name: &str, object: &Value) -> Option<(u16, Value)> {
    if t.plural != "services" {
        return None;
    }
    let ports = object.pointer("/spec/ports")?.as_array()?;
    for (i, port) in ports.iter().enumerate() {
        if ports[..i].iter().any(|p| p["name"] == port["name"]) {
            return Some(status(
                422,
                "Invalid",
                &format!(
                    "Service \"{name}\" is invalid: spec.ports[{i}].name: Duplicate value: {}",
                    port["name"]
                ),
            ));
        }
    }
    None
}

/// Removes from `fields` every leaf present in `taken`.
fn subtract(fields: &mut Value, taken: &Value) {
    let (Some(f), Some(t)) = (fields.as_object_mut(), taken.as_object()) else {
        return;
    };
    for (k, sub) in t {
        let leaf = sub.as_object().is_none_or(Map::is_empty);
        if leaf {
            f.remove(k);
        } else if let Some(child) = f.get_mut(k) {
            subtract(child, sub);
        }
    }
}

impl State {
    fn next_rv(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    fn create(
        &mut self,
        t: &Target,
        mut obj: Value,
        manager: Option<String>,
        operation: &str,
    ) -> (u16, Value) {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = (t.plural.clone(), t.namespace.clone(), name.clone());
        if self.objects.contains_key(&key) {
            return status(
                409,
                "AlreadyExists",
                &format!("{} {name} already exists", t.plural),
            );
        }
        self.uid += 1;
        let uid = format!("uid-{}", self.uid);
        let rv = self.next_rv();
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
        let fields = fields_of(&obj, true);
        let meta = &mut obj["metadata"];
        meta["namespace"] = json!(t.namespace);
        meta["uid"] = json!(uid);
        meta["resourceVersion"] = json!(rv);
        meta["generation"] = json!(1);
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        if let Some(manager) = manager {
            meta["managedFields"] = json!([{
                "manager": manager, "operation": operation, "apiVersion": t.group_version,
                "fieldsType": "FieldsV1", "fieldsV1": fields
            }]);
        }
        self.objects.insert(key, obj.clone());
        (201, obj)
    }

    fn serve(
        &mut self,
        method: &Method,
        t: &Target,
        query: &str,
        content_type: &str,
        body: Value,
    ) -> (u16, Value) {
        let manager = query_param(query, "fieldManager");
        let Some(name) = t.name.clone() else {
            return match *method {
                Method::GET => self.list(t, query),
                Method::POST => self.create(t, body, manager, "Update"),
                _ => status(405, "MethodNotAllowed", "collection"),
            };
        };
        let key = (t.plural.clone(), t.namespace.clone(), name.clone());
        let not_found = || {
            status(
                404,
                "NotFound",
                &format!("{} \"{name}\" not found", t.plural),
            )
        };
        match *method {
            Method::GET => match self.objects.get(&key) {
                Some(o) => (200, o.clone()),
                None => not_found(),
            },
            Method::DELETE => {
                let has_finalizers = self.objects.get(&key).is_some_and(|o| {
                    o["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|f| !f.is_empty())
                });
                if has_finalizers {
                    let obj = self.objects.get_mut(&key).map(|o| {
                        o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:01Z");
                        o.clone()
                    });
                    return (200, obj.unwrap_or_default());
                }
                match self.objects.remove(&key) {
                    Some(_) => (
                        200,
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                    ),
                    None => not_found(),
                }
            }
            Method::PUT => {
                let Some(live) = self.objects.get(&key).cloned() else {
                    return not_found();
                };
                if body["metadata"]["resourceVersion"] != live["metadata"]["resourceVersion"] {
                    return status(409, "Conflict", "the object has been modified");
                }
                if let Some(invalid) = invalid(t, &name, &body) {
                    return invalid;
                }
                let rv = self.next_rv();
                let mut obj = body;
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
                if let Some(status) = live.get("status") {
                    obj["status"] = status.clone();
                }
                for kept in ["uid", "creationTimestamp", "generation"] {
                    obj["metadata"][kept] = live["metadata"][kept].clone();
                }
                if live.get("spec") != obj.get("spec") {
                    let g = live["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                    obj["metadata"]["generation"] = json!(g);
                }
                obj["metadata"]["resourceVersion"] = json!(rv);
                // An update owns what it sets, taken from every other manager (a
                // simplification: the API server moves only the fields whose values changed).
                let taken = fields_of(&obj, true);
                let mut entries: Vec<Value> = live["metadata"]["managedFields"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for e in &mut entries {
                    if e["subresource"].is_null() {
                        subtract(&mut e["fieldsV1"], &taken);
                    }
                }
                entries.retain(|e| {
                    e["fieldsV1"].as_object().is_some_and(|f| {
                        f.values()
                            .any(|v| v.as_object().is_none_or(|m| !m.is_empty()))
                    })
                });
                entries.push(json!({"manager": query_param(query, "fieldManager"),
                                    "operation": "Update", "apiVersion": t.group_version,
                                    "fieldsType": "FieldsV1", "fieldsV1": taken}));
                obj["metadata"]["managedFields"] = Value::Array(entries);
                self.objects.insert(key, obj.clone());
                (200, obj)
            }
            Method::PATCH => self.patch(t, key, query, content_type, body),
            _ => status(405, "MethodNotAllowed", "method"),
        }
    }

    fn list(&self, t: &Target, query: &str) -> (u16, Value) {
        let selector = selector_of(query);
        let matching = self
            .objects
            .iter()
            .filter(|((p, ns, _), _)| *p == t.plural && *ns == t.namespace)
            .map(|(_, o)| o)
            .filter(|o| selected(o, &selector));
        // Pages of `limit`, the continue token being the offset of the next one.
        let offset: usize = query_param(query, "continue")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let limit: usize = query_param(query, "limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let mut items: Vec<Value> = matching
            .skip(offset)
            .take(limit.saturating_add(1))
            .cloned()
            .collect();
        let mut metadata = json!({"resourceVersion": self.resource_version.to_string()});
        if items.len() > limit {
            items.truncate(limit);
            metadata["continue"] = json!((offset + limit).to_string());
        }
        (
            200,
            json!({"apiVersion": t.group_version, "kind": "List", "metadata": metadata, "items": items}),
        )
    }

    fn patch(
        &mut self,
        t: &Target,
        key: (String, String, String),
        query: &str,
        content_type: &str,
        body: Value,
    ) -> (u16, Value) {
        let manager = query_param(query, "fieldManager");
        let status_only = t.subresource.as_deref() == Some("status");
        if content_type.starts_with("application/apply-patch") {
            if manager.is_none() || query_param(query, "force").as_deref() != Some("true") {
                return status(
                    400,
                    "BadRequest",
                    "server-side apply needs fieldManager and force in these tests",
                );
            }
            if body.get("apiVersion").is_none() || body.get("kind").is_none() {
                return status(400, "BadRequest", "apply needs apiVersion and kind");
            }
            if !self.objects.contains_key(&key) {
                if status_only {
                    return status(404, "NotFound", "no object for status");
                }
                if body.get("status").is_some() {
                    return status(400, "BadRequest", "status sent in a main-resource apply");
                }
                return self.create(t, body, manager, "Apply");
            }
            let rv = self.next_rv();
            let Some(live) = self.objects.get_mut(&key) else {
                return status(404, "NotFound", "gone");
            };
            if status_only {
                live["status"] = body["status"].clone();
            } else {
                if body.get("status").is_some() {
                    return status(400, "BadRequest", "status sent in a main-resource apply");
                }
                let merged = merged_ports(live, &body, manager.as_deref());
                if let Some(invalid) = merged.and_then(|ports| {
                    let mut candidate = body.clone();
                    candidate["spec"]["ports"] = ports;
                    invalid(t, &key.2, &candidate)
                }) {
                    return invalid;
                }
                let spec_changed = live.get("spec") != body.get("spec");
                let Some(obj) = live.as_object_mut() else {
                    return status(500, "Internal", "not an object");
                };
                for (k, v) in body.as_object().into_iter().flatten() {
                    if k == "metadata" {
                        for (mk, mv) in v.as_object().into_iter().flatten() {
                            obj["metadata"][mk] = mv.clone();
                        }
                    } else {
                        obj.insert(k.clone(), v.clone());
                    }
                }
                if spec_changed {
                    let g = live["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                    live["metadata"]["generation"] = json!(g);
                }
                let fields = fields_of(&body, true);
                let entries = live["metadata"]["managedFields"].as_array_mut();
                let entry = json!({"manager": manager, "operation": "Apply", "apiVersion": t.group_version,
                                   "fieldsType": "FieldsV1", "fieldsV1": fields});
                match entries {
                    Some(list) => {
                        list.retain(|e| {
                            !(e["manager"] == json!(manager) && e["operation"] == "Apply")
                        });
                        list.push(entry);
                    }
                    None => live["metadata"]["managedFields"] = json!([entry]),
                }
            }
            live["metadata"]["resourceVersion"] = json!(rv);
            return (200, live.clone());
        }
        let rv = self.next_rv();
        let Some(live) = self.objects.get_mut(&key) else {
            return status(404, "NotFound", "not found");
        };
        if content_type.starts_with("application/merge-patch") {
            if status_only {
                merge_patch(&mut live["status"], &body["status"]);
            } else {
                merge_patch(live, &body);
            }
        } else if content_type.starts_with("application/json-patch") {
            // As in the API server, testing an absent path against null succeeds.
            let mut ops = body.as_array().cloned().unwrap_or_default();
            ops.retain(|op| {
                !(op["op"] == "test"
                    && op["value"].is_null()
                    && op["path"]
                        .as_str()
                        .is_some_and(|p| live.pointer(p).is_none()))
            });
            let Ok(p) = serde_json::from_value::<json_patch::Patch>(Value::Array(ops)) else {
                return status(400, "BadRequest", "bad json patch");
            };
            if json_patch::patch(live, &p).is_err() {
                return status(422, "Invalid", "json patch test failed");
            }
        } else {
            return status(415, "UnsupportedMediaType", content_type);
        }
        live["metadata"]["resourceVersion"] = json!(rv);
        let out = live.clone();
        // A deleted object whose last finalizer went is gone.
        let finalizers_gone = out["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
        if out["metadata"].get("deletionTimestamp").is_some() && finalizers_gone {
            self.objects.remove(&key);
        }
        (200, out)
    }
}
