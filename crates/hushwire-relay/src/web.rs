//! Serving browsers (`docs/relay-protocol.md` §1.1): the origin check of WebSocket upgrades,
//! and the optional read-only static files of the web widget and console (`--web-dir`).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// What an upgrade's `Origin` header says about it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OriginCheck {
    /// No `Origin` header: a native client (browsers always send one on a WebSocket request).
    Native,
    /// An origin on the allow-list.
    Allowed,
    /// An origin not on the list (or none configured, or not an origin at all, e.g. `null`).
    Refused,
}

/// Checks the request's `Origin` against `allowed` (serialized origins, `config::parse_origin`):
/// the header is serialized the same way and compared whole, so neither a prefix nor a
/// look-alike suffix (`https://clinic.example.evil.com`) passes. Several `Origin` headers are
/// refused.
pub(crate) fn check_origin(headers: &HeaderMap, allowed: &[String]) -> OriginCheck {
    let mut values = headers.get_all(axum::http::header::ORIGIN).iter();
    let Some(value) = values.next() else {
        return OriginCheck::Native;
    };
    if values.next().is_some() {
        return OriginCheck::Refused;
    }
    match value
        .to_str()
        .ok()
        .and_then(|text| crate::config::parse_origin(text).ok())
    {
        Some(origin) if allowed.contains(&origin) => OriginCheck::Allowed,
        _ => OriginCheck::Refused,
    }
}

/// The static web files and the headers they are served with.
pub(crate) struct WebFiles {
    root: PathBuf,
    csp: HeaderValue,
    /// The allowed origins (serialized), which may also read the files from their own pages
    /// (CORS): a clinic's site embeds the widget served here, and the widget fetches its
    /// WebAssembly module from this origin.
    allowed: Vec<String>,
}

/// What a URL path names under the root.
enum Found {
    /// A regular file: its bytes and content type.
    File(Vec<u8>, &'static str),
    /// A directory with an `index.html`, named without the trailing slash: relative links in
    /// its page would resolve against the parent, so the client is sent to the path with `/`.
    Directory,
}

impl WebFiles {
    /// Files under `root`; pages may be framed by `allowed` origins only.
    pub(crate) fn new(root: PathBuf, allowed: &[String]) -> Arc<Self> {
        let ancestors = if allowed.is_empty() {
            "'none'".to_owned()
        } else {
            allowed.join(" ")
        };
        let csp = format!(
            "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self' wss:; \
             img-src 'self' data:; style-src 'self'; object-src 'none'; base-uri 'none'; \
             form-action 'none'; frame-ancestors {ancestors}"
        );
        Arc::new(Self {
            root,
            // Origins are checked at start-up: only ASCII letters, digits and `:/.[]-`.
            csp: HeaderValue::from_str(&csp)
                .unwrap_or(HeaderValue::from_static("default-src 'none'")),
            allowed: allowed.to_vec(),
        })
    }

    /// `GET`/`HEAD` of `uri`: the file, a redirect to `path/` for a directory with an
    /// `index.html` named without the slash, or 404 for anything missing, hidden, outside the
    /// root, a directory without `index.html` (no listings) or a file named with a trailing
    /// slash. A request from an allowed origin (its `Origin` header) may read the answer from
    /// that origin's pages (`Access-Control-Allow-Origin`).
    pub(crate) async fn serve(&self, method: Method, uri: Uri, request: &HeaderMap) -> Response {
        let mut response = if method != Method::GET && method != Method::HEAD {
            (StatusCode::METHOD_NOT_ALLOWED, [("allow", "GET, HEAD")]).into_response()
        } else {
            match self.read(uri.path()).await {
                Some(Found::Directory) => redirect_to_directory(&uri),
                Some(Found::File(bytes, mime)) => {
                    let mut r = if method == Method::HEAD {
                        let length = bytes.len();
                        let mut r = ().into_response();
                        if let Ok(v) = HeaderValue::from_str(&length.to_string()) {
                            r.headers_mut().insert("content-length", v);
                        }
                        r
                    } else {
                        bytes.into_response()
                    };
                    let headers = r.headers_mut();
                    headers.insert("content-type", HeaderValue::from_static(mime));
                    // The console must not be cached (it shows patient conversations); other
                    // assets are revalidated, so a new build is picked up at once.
                    let cache = if mime.starts_with("text/html") {
                        "no-store"
                    } else {
                        "no-cache"
                    };
                    headers.insert("cache-control", HeaderValue::from_static(cache));
                    r
                }
                None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
            }
        };
        let headers = response.headers_mut();
        headers.insert(
            HeaderName::from_static("content-security-policy"),
            self.csp.clone(),
        );
        headers.insert(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        );
        // The answer depends on `Origin` (allowed or not), so a cache must not hand one
        // origin's answer to another.
        headers.insert(axum::http::header::VARY, HeaderValue::from_static("Origin"));
        if (method == Method::GET || method == Method::HEAD)
            && check_origin(request, &self.allowed) == OriginCheck::Allowed
        {
            // Exactly the request's origin (the one a browser compares with), never `*`, never
            // with credentials: the files are public, but only the named sites may read them
            // from their pages.
            if let Some(origin) = request.get(axum::http::header::ORIGIN) {
                headers.insert(
                    axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    origin.clone(),
                );
            }
        }
        response
    }

    /// What URL path `path` names: a regular file inside the root (after following links), or
    /// a directory with an index named without the trailing slash.
    async fn read(&self, path: &str) -> Option<Found> {
        let relative = url_path(path)?;
        let root = tokio::fs::canonicalize(&self.root).await.ok()?;
        let mut file = tokio::fs::canonicalize(root.join(&relative)).await.ok()?;
        if !file.starts_with(&root) {
            return None;
        }
        let named_as_directory = path.ends_with('/');
        if tokio::fs::metadata(&file).await.ok()?.is_dir() {
            file = tokio::fs::canonicalize(file.join("index.html"))
                .await
                .ok()?;
            if !file.starts_with(&root) || !tokio::fs::metadata(&file).await.ok()?.is_file() {
                return None;
            }
            if !named_as_directory {
                return Some(Found::Directory);
            }
        } else if named_as_directory {
            // `/chat.html/`: a file is not a directory.
            return None;
        }
        if !tokio::fs::metadata(&file).await.ok()?.is_file() {
            return None;
        }
        let bytes = tokio::fs::read(&file).await.ok()?;
        Some(Found::File(bytes, mime(&file)))
    }
}

/// `308` to the request's path with a slash added, and its query: a path on this host only
/// (leading slashes collapsed to one, so `//other.example` cannot become a link to another
/// host); 404 if that is not a header value.
fn redirect_to_directory(uri: &Uri) -> Response {
    let mut location = format!("/{}/", uri.path().trim_start_matches('/'));
    if let Some(query) = uri.query() {
        location.push('?');
        location.push_str(query);
    }
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            let mut r = (StatusCode::PERMANENT_REDIRECT, "").into_response();
            r.headers_mut().insert(axum::http::header::LOCATION, value);
            r
        }
        Err(_) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// A URL path, percent-decoded, as a relative file path: `None` for `..`, `.`, hidden names
/// (`.git`), backslashes, NUL or anything not UTF-8: never a way out of the root.
fn url_path(path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(path)?;
    let mut out = PathBuf::new();
    for segment in decoded.split('/') {
        if segment.is_empty() {
            continue;
        }
        if segment.starts_with('.') || segment.contains(['\\', '\0']) {
            return None;
        }
        let part = Path::new(segment);
        if !matches!(part.components().next(), Some(Component::Normal(_)))
            || part.components().count() != 1
        {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The content type of a file, by extension; unknown ones are served as opaque bytes (with
/// `nosniff`, a browser does not guess).
fn mime(file: &Path) -> &'static str {
    let extension = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json" | "map") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::url_path;

    #[test]
    fn url_paths_never_leave_the_root() {
        assert_eq!(
            url_path("/widget/app.js"),
            Some(std::path::PathBuf::from("widget/app.js"))
        );
        for bad in [
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/secret",
            "/a%2f..%2f..%2fb",
            "/.git/config",
            "/a\\..\\b",
            "/%00",
            "/%zz",
        ] {
            assert_eq!(url_path(bad), None, "{bad}");
        }
    }
}
