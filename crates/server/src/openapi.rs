//! `GET /openapi.json`: the API this server speaks, as an OpenAPI 3.1 document, and `GET /docs`: that document
//! rendered by one self-contained page (no script or style from elsewhere: it works offline). Both need no key:
//! they describe the API, never a namespace's data.
//!
//! The document is written by hand beside this file (`openapi/openapi.json`); the tests below hold it to the
//! router: every route the code declares is in it, and every operation in it is routed.

use axum::http::header;
use axum::response::IntoResponse;

const DOCUMENT: &str = include_str!("openapi/openapi.json");
const PAGE: &str = include_str!("openapi/docs.html");

pub(crate) async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

pub(crate) async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{ServeOptions, Server};

    fn spec() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    /// The paths given to `.route(` in the server's source, in OpenAPI's spelling (`{*id}` is `{id}`).
    fn declared_routes() -> BTreeSet<String> {
        let mut routes = BTreeSet::new();
        for source in [include_str!("lib.rs"), include_str!("kb.rs")] {
            for piece in source.split(".route(").skip(1) {
                let piece = piece.trim_start();
                let Some(rest) = piece.strip_prefix('"') else {
                    continue;
                };
                let path = &rest[..rest.find('"').expect("a closed string")];
                routes.insert(path.replace("{*", "{"));
            }
        }
        routes
    }

    #[test]
    fn the_document_names_this_version() {
        assert_eq!(spec()["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn every_declared_route_is_documented() {
        let documented: BTreeSet<String> = spec()["paths"].as_object().unwrap().keys().cloned().collect();
        let declared = declared_routes();
        assert!(declared.len() >= 15, "{declared:?}");
        let missing: Vec<&String> = declared.difference(&documented).collect();
        assert!(missing.is_empty(), "routes missing from openapi.json: {missing:?}");
    }

    /// The status line and body of one request to `address`.
    async fn request(address: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let head = format!("{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer[9..12].parse().unwrap();
        (status, answer)
    }

    #[tokio::test]
    async fn every_documented_operation_is_routed_and_the_pages_are_served() {
        let home = tempfile::tempdir().unwrap();
        let options = ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServeOptions::default()
        };
        let server = Server::bind(&options, knowhow_index::Home::new(home.path().to_path_buf()))
            .await
            .unwrap();
        let address = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let spec = spec();
        let mut operations = 0;
        for (path, item) in spec["paths"].as_object().unwrap() {
            let concrete = path.replace("{collection}", "c").replace("{id}", "x");
            let methods = item.as_object().unwrap().keys();
            for method in methods.filter(|key| ["get", "post", "put", "patch", "delete"].contains(&key.as_str())) {
                let (status, answer) = request(address, &method.to_uppercase(), &concrete).await;
                assert_ne!(status, 405, "{method} {path}: {answer}");
                assert!(!answer.contains("no such route"), "{method} {path}: {answer}");
                operations += 1;
            }
        }
        assert!(operations >= 20, "{operations}");
        let (status, answer) = request(address, "GET", "/openapi.json").await;
        assert_eq!(status, 200);
        assert!(
            answer.contains("application/json") && answer.contains("\"openapi\": \"3.1"),
            "{answer:.300}"
        );
        let (status, page) = request(address, "GET", "/docs").await;
        assert_eq!(status, 200);
        assert!(page.contains("text/html") && page.contains("openapi.json"));
        // Offline: the page loads nothing from another host.
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "the docs page must not fetch from elsewhere"
        );
        let _ = stop.send(());
        serving.await.unwrap().unwrap();
    }
}
