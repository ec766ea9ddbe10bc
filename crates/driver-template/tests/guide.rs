//! The driver guide (`docs/driver-guide.md`) walks through this template: each of its `rust`
//! code blocks must be an excerpt of the template's sources, word for word, so that what the
//! guide shows is what is compiled and run through the conformance kit here.

use std::path::Path;

#[test]
fn every_guide_snippet_is_an_excerpt_of_the_template() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(here.join("../../docs/driver-guide.md")).expect("guide");
    let mut sources = String::new();
    for f in [
        "src/lib.rs",
        "src/config.rs",
        "src/driver.rs",
        "src/error.rs",
        "tests/conformance.rs",
    ] {
        sources += &std::fs::read_to_string(here.join(f)).expect("template source");
    }
    let mut blocks = Vec::new();
    let mut lines = guide.lines();
    while let Some(l) = lines.next() {
        if let Some(info) = l.strip_prefix("```") {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            if info.starts_with("rust") {
                assert_eq!(
                    info, "rust",
                    "a guide snippet marked '{info}' is not compiled: mark it plain rust"
                );
                blocks.push(body.join("\n"));
            }
        }
    }
    assert!(
        blocks.len() >= 6,
        "the guide has {} rust blocks; it walks through the template",
        blocks.len()
    );
    for b in &blocks {
        assert!(
            sources.contains(b.as_str()),
            "this guide snippet is not in the template's sources (update the guide from them):\n{b}"
        );
    }
}
