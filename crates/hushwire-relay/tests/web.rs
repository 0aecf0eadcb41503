//! The relay serves browsers (`docs/relay-protocol.md` §1.1): WebSocket upgrades from web
//! pages only from allowed origins, and the optional static files with a browser's headers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::{Device, RelayProcess, metrics, sample, temp_dir};
use hushwire_proto::relay::FrameBody;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const ORIGIN_REFUSALS: &str = r#"hushwire_relay_refusals_total{reason="origin"}"#;

/// Opens a WebSocket with `Origin: origin`: `Ok(())` when the relay upgraded it and sent its
/// challenge, else the HTTP status it answered with.
async fn upgrade_from(relay: &RelayProcess, origin: &str) -> Result<(), u16> {
    let mut request = relay.url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", origin.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut socket, response)) => {
            assert_eq!(response.status().as_u16(), 101);
            let first = common::next_frame(&mut socket).await.expect("a challenge");
            assert!(matches!(first.body, FrameBody::Challenge(_)), "{first:?}");
            Ok(())
        }
        Err(Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("connecting from {origin} failed otherwise: {e}"),
    }
}

/// A raw HTTP/1.1 request line target (not normalized by any client): status, headers (names
/// in lower case) and body.
async fn get(port: u16, method: &str, target: &str) -> (u16, HashMap<String, String>, Vec<u8>) {
    get_with(port, method, target, "").await
}

/// [`get`] with `extra` header lines (each ending in `\r\n`).
async fn get_with(
    port: u16,
    method: &str,
    target: &str,
    extra: &str,
) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(
        format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the relay answers")
        .unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8(out[..split].to_vec()).unwrap();
    let body = out[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body)
}

#[tokio::test]
async fn an_allowed_origin_upgrades_and_others_get_403() {
    let relay = RelayProcess::start(
        "origins",
        &[
            "--allow-origin",
            "https://clinic.example",
            "--allow-origin",
            "http://localhost:8080",
        ],
    );
    assert_eq!(upgrade_from(&relay, "https://clinic.example").await, Ok(()));
    // The same origin, serialized otherwise (RFC 6454: case-insensitive scheme and host, the
    // default port implied).
    assert_eq!(
        upgrade_from(&relay, "HTTPS://Clinic.Example:443").await,
        Ok(())
    );
    assert_eq!(upgrade_from(&relay, "http://localhost:8080").await, Ok(()));
    let others = [
        "https://clinic.example.evil.com",
        "https://evil-clinic.example",
        "https://evil.com",
        "http://clinic.example",
        "https://clinic.example:8443",
        "http://localhost:8081",
        "http://localhost",
        "https://localhost:8080",
        "https://clinic.example/",
        "null",
    ];
    for origin in others {
        assert_eq!(upgrade_from(&relay, origin).await, Err(403), "{origin}");
    }
    let text = metrics(relay.port).await;
    assert_eq!(sample(&text, ORIGIN_REFUSALS), Some(others.len() as f64));
    // Logged with the refused origin, as metadata.
    let log = relay.log_text();
    assert!(
        log.contains("clinic.example.evil.com") && log.contains("origin"),
        "{log}"
    );
    // Native clients send no Origin and are not affected.
    let device = Device::new(160, 1);
    drop(common::Client::register(&relay.url(), &device).await);
    drop(common::Client::login(&relay.url(), &device).await);
    assert_eq!(
        sample(&metrics(relay.port).await, ORIGIN_REFUSALS),
        Some(others.len() as f64)
    );
}

#[tokio::test]
async fn without_a_list_every_browser_is_refused_and_native_clients_still_connect() {
    let relay = RelayProcess::start("no-origins", &[]);
    assert_eq!(
        upgrade_from(&relay, "https://clinic.example").await,
        Err(403)
    );
    assert_eq!(upgrade_from(&relay, "http://127.0.0.1").await, Err(403));
    assert_eq!(
        sample(&metrics(relay.port).await, ORIGIN_REFUSALS),
        Some(2.0)
    );
    let device = Device::new(161, 1);
    drop(common::Client::register(&relay.url(), &device).await);
}

#[tokio::test]
async fn the_list_also_comes_from_the_config_file() {
    let dir = temp_dir("origin-file");
    let file = dir.join("relay.toml");
    std::fs::write(&file, "allow_origin = [\"https://file.example\"]\n").unwrap();
    let relay = RelayProcess::start("origin-file", &["--config", &file.display().to_string()]);
    assert_eq!(upgrade_from(&relay, "https://file.example").await, Ok(()));
    assert_eq!(
        upgrade_from(&relay, "https://clinic.example").await,
        Err(403)
    );
}

#[test]
fn a_malformed_origin_or_web_dir_is_a_start_up_error() {
    for (args, says) in [
        (
            vec!["--allow-origin", "https://clinic.example/widget"],
            "is not a web origin",
        ),
        (
            vec!["--allow-origin", "clinic.example"],
            "is not a web origin",
        ),
        (vec!["--allow-origin", "*"], "is not a web origin"),
        (
            vec!["--web-dir", "/nonexistent/hushwire-web"],
            "is not a directory",
        ),
    ] {
        let data = temp_dir("bad-origin");
        let out = Command::new(env!("CARGO_BIN_EXE_hushwire-relay"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // The environment's list is comma-separated, and checked the same way.
    let data = temp_dir("bad-origin-env");
    let out = Command::new(env!("CARGO_BIN_EXE_hushwire-relay"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env(
            "HUSHWIRE_RELAY_ALLOW_ORIGIN",
            "https://ok.example,ftp://clinic.example",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("\"ftp://clinic.example\" is not a web origin"),
        "{stderr}"
    );
}

/// A web directory with a page, a script, a module, a subdirectory without an index, and a
/// secret file beside it (outside the root).
fn web_dir(name: &str) -> std::path::PathBuf {
    let base = temp_dir(name);
    std::fs::write(base.join("secret.txt"), b"SECRET-OUTSIDE").unwrap();
    let web = base.join("web");
    std::fs::create_dir_all(web.join("assets")).unwrap();
    std::fs::write(
        web.join("index.html"),
        b"<!doctype html><title>widget</title>",
    )
    .unwrap();
    std::fs::write(web.join("assets/app.js"), b"console.log('widget');").unwrap();
    std::fs::write(web.join("assets/core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(web.join(".hidden"), b"HIDDEN").unwrap();
    std::fs::create_dir_all(web.join("console")).unwrap();
    std::fs::write(
        web.join("console/index.html"),
        b"<!doctype html><title>console</title>",
    )
    .unwrap();
    web
}

#[tokio::test]
async fn static_files_are_served_with_a_browsers_headers() {
    let web = web_dir("web-files");
    let relay = RelayProcess::start(
        "web-files",
        &[
            "--web-dir",
            &web.display().to_string(),
            "--allow-origin",
            "https://clinic.example",
        ],
    );
    for target in ["/", "/index.html"] {
        let (status, headers, body) = get(relay.port, "GET", target).await;
        assert_eq!(status, 200, "{target}");
        assert_eq!(body, b"<!doctype html><title>widget</title>");
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        let csp = &headers["content-security-policy"];
        assert!(
            csp.contains("script-src 'self' 'wasm-unsafe-eval';"),
            "{csp}"
        );
        assert!(
            csp.contains("frame-ancestors https://clinic.example"),
            "{csp}"
        );
        assert!(csp.contains("object-src 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
    }
    let (status, headers, body) = get(relay.port, "GET", "/assets/app.js").await;
    assert_eq!(status, 200);
    assert_eq!(body, b"console.log('widget');");
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert_ne!(headers["cache-control"], "public");
    let (status, headers, body) = get(relay.port, "GET", "/assets/core.wasm").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/wasm");
    assert_eq!(body, b"\0asm\x01\0\0\0");
    let (status, headers, body) = get(relay.port, "HEAD", "/assets/core.wasm").await;
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(headers["content-length"], "8");
    // No listing of a directory without an index, nothing hidden, nothing missing.
    for target in ["/assets/", "/assets", "/.hidden", "/missing.js"] {
        let (status, headers, _) = get(relay.port, "GET", target).await;
        assert_eq!(status, 404, "{target}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{target}");
    }
    // Only reading.
    let (status, _, _) = get(relay.port, "POST", "/index.html").await;
    assert_eq!(status, 405);
    // The relay's own routes are unchanged.
    let (status, _, body) = get(relay.port, "GET", "/healthz").await;
    assert_eq!((status, body.as_slice()), (200, b"ok\n".as_slice()));
}

#[tokio::test]
async fn traversal_out_of_the_web_dir_is_refused() {
    let web = web_dir("web-traversal");
    let relay = RelayProcess::start("web-traversal", &["--web-dir", &web.display().to_string()]);
    // The file exists one level up: every way of naming it is refused.
    assert!(web.join("../secret.txt").exists());
    for target in [
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/./../secret.txt",
    ] {
        let (status, _, body) = get(relay.port, "GET", target).await;
        assert!(matches!(status, 400 | 404), "{target}: {status}");
        assert!(
            !body.windows(14).any(|w| w == b"SECRET-OUTSIDE"),
            "{target} leaked the file"
        );
    }
    // A link inside the directory that leads out of it is not followed out.
    std::os::unix::fs::symlink(web.join("../secret.txt"), web.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(web.join(".."), web.join("up")).unwrap();
    for target in ["/link.txt", "/up/secret.txt"] {
        let (status, _, body) = get(relay.port, "GET", target).await;
        assert_eq!(status, 404, "{target}");
        assert!(
            !body.windows(14).any(|w| w == b"SECRET-OUTSIDE"),
            "{target}"
        );
    }
}

#[tokio::test]
async fn without_a_web_dir_no_files_are_served() {
    let relay = RelayProcess::start("no-web", &[]);
    for target in ["/", "/index.html", "/relay.db"] {
        let (status, headers, _) = get(relay.port, "GET", target).await;
        assert_eq!(status, 404, "{target}");
        assert!(!headers.contains_key("content-security-policy"), "{target}");
    }
}

#[tokio::test]
async fn an_allowed_origin_may_read_the_files_from_its_pages() {
    let web = web_dir("web-cors");
    let relay = RelayProcess::start(
        "web-cors",
        &[
            "--web-dir",
            &web.display().to_string(),
            "--allow-origin",
            "https://clinic.example",
            "--allow-origin",
            "http://localhost:7902",
        ],
    );
    // The clinic's page (another origin) embeds the widget: its script, module and stylesheet
    // are read from the page, with CORS for the WebAssembly module's fetch.
    for (origin, target) in [
        ("https://clinic.example", "/assets/core.wasm"),
        ("http://localhost:7902", "/assets/core.wasm"),
        ("http://localhost:7902", "/assets/app.js"),
        ("https://clinic.example", "/index.html"),
    ] {
        for method in ["GET", "HEAD"] {
            let (status, headers, _) =
                get_with(relay.port, method, target, &format!("Origin: {origin}\r\n")).await;
            assert_eq!(status, 200, "{method} {target} from {origin}");
            assert_eq!(
                headers
                    .get("access-control-allow-origin")
                    .map(String::as_str),
                Some(origin),
                "{method} {target} from {origin}"
            );
            assert_eq!(headers["vary"], "Origin", "{method} {target} from {origin}");
            assert!(!headers.contains_key("access-control-allow-credentials"));
        }
    }
    // Another origin, a look-alike, `null`, or two `Origin` headers: the file, but no grant (the
    // browser then refuses the page's read); the same `Vary`, so a cache keeps them apart.
    for extra in [
        "Origin: https://evil.example\r\n",
        "Origin: https://clinic.example.evil.com\r\n",
        "Origin: http://localhost:7903\r\n",
        "Origin: null\r\n",
        "Origin: https://clinic.example\r\nOrigin: https://evil.example\r\n",
        "",
    ] {
        let (status, headers, body) = get_with(relay.port, "GET", "/assets/core.wasm", extra).await;
        assert_eq!(
            (status, body.as_slice()),
            (200, b"\0asm\x01\0\0\0".as_slice()),
            "{extra:?}"
        );
        assert!(
            !headers.contains_key("access-control-allow-origin"),
            "{extra:?}: {headers:?}"
        );
        assert_eq!(headers["vary"], "Origin", "{extra:?}");
    }
    // Writing is not granted to anyone.
    let (status, headers, _) = get_with(
        relay.port,
        "POST",
        "/assets/core.wasm",
        "Origin: https://clinic.example\r\n",
    )
    .await;
    assert_eq!(status, 405);
    assert!(!headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn a_directory_named_without_its_slash_is_redirected_and_a_file_with_one_is_404() {
    let web = web_dir("web-slash");
    let relay = RelayProcess::start("web-slash", &["--web-dir", &web.display().to_string()]);
    // `/console` would serve the page with its relative `console.js` resolving to `/console.js`.
    for (target, location) in [
        ("/console", "/console/"),
        ("/console?lang=en&x=%2F", "/console/?lang=en&x=%2F"),
        // Never to another host: `//console` is not a link to the host `console`.
        ("//console", "/console/"),
        ("///console", "/console/"),
    ] {
        for method in ["GET", "HEAD"] {
            let (status, headers, _) = get(relay.port, method, target).await;
            assert_eq!(status, 308, "{method} {target}");
            assert_eq!(headers["location"], location, "{method} {target}");
        }
    }
    let (status, _, body) = get(relay.port, "GET", "/console/").await;
    assert_eq!(
        (status, body.as_slice()),
        (200, b"<!doctype html><title>console</title>".as_slice())
    );
    // A directory without an index is not redirected (there is nothing to serve there).
    let (status, headers, _) = get(relay.port, "GET", "/assets").await;
    assert_eq!(status, 404);
    assert!(!headers.contains_key("location"));
    // A file is not a directory.
    for target in [
        "/index.html/",
        "/console/index.html/",
        "/assets/app.js/",
        "/assets/app.js//",
    ] {
        let (status, _, body) = get(relay.port, "GET", target).await;
        assert_eq!(
            (status, body.as_slice()),
            (404, b"not found\n".as_slice()),
            "{target}"
        );
    }
    let (status, _, _) = get(relay.port, "GET", "/console/index.html").await;
    assert_eq!(status, 200);
}
