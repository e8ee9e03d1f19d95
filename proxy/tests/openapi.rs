//! The OpenAPI document parses and lists exactly the routes the router serves.

mod common;

use std::collections::BTreeSet;

use common::System;

#[test]
fn the_openapi_document_lists_every_route_of_the_router() {
    let mut s = System::new();
    s.start_proxy();
    let (status, doc) = s.get("/api/openapi.json");
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let routes = plantd_proxy::router::routes();
    let served: BTreeSet<(String, String)> = routes
        .list()
        .iter()
        .map(|(method, path)| (method.to_string(), path.clone()))
        .collect();
    assert_eq!(documented, served);
    assert!(served.len() >= 11, "{served:?}");
    // Every path parameter is described.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for op in item.as_object().unwrap().values() {
            let params: Vec<&str> = op["parameters"]
                .as_array()
                .map(|p| p.iter().filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            for segment in path.split('/') {
                if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    assert!(params.contains(&name), "{path}: {name} undocumented");
                }
            }
        }
    }
}
