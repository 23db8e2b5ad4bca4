//! The README's gallery, generated from `results/gallery.toml` so it cannot drift from
//! the committed reference runs: `qlab gallery README.md` rewrites the Markdown table
//! between the `<!-- gallery ... -->` and `<!-- /gallery -->` markers, two figures per
//! row with their captions beneath; `--check` only compares. Every listed figure must
//! exist (and, by the CLI tests, redraws byte for byte from its run's CSV).

use crate::error::{ReportError, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GalleryFile {
    figure: Vec<Figure>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Figure {
    alt: String,
    /// Relative to the repository root (where the README is).
    path: String,
    caption: String,
}

const START: &str = "<!-- gallery";
const END: &str = "<!-- /gallery -->";

/// The gallery table for `listing` (the text of `results/gallery.toml`); figure paths
/// are checked against `root`.
pub fn table(listing: &str, listing_path: &Path, root: &Path) -> Result<String> {
    let file: GalleryFile = toml::from_str(listing).map_err(|e| ReportError::Config {
        path: listing_path.to_path_buf(),
        line: 1,
        column: 1,
        message: e.message().trim().to_string(),
    })?;
    let mut out = String::from("| | |\n|---|---|\n");
    for pair in file.figure.chunks(2) {
        for figure in pair {
            if !root.join(&figure.path).exists() {
                return Err(ReportError::Usage(format!(
                    "{}: {} is not a committed figure",
                    listing_path.display(),
                    figure.path
                )));
            }
        }
        let cell = |f: Option<&Figure>, image: bool| match f {
            Some(f) if image => format!("![{}]({})", f.alt, f.path),
            Some(f) => f.caption.clone(),
            None => String::new(),
        };
        out.push_str(&format!("| {} | {} |\n", cell(pair.first(), true), cell(pair.get(1), true)));
        out.push_str(&format!("| {} | {} |\n", cell(pair.first(), false), cell(pair.get(1), false)));
    }
    Ok(out)
}

/// Write (or, with `check`, compare) the gallery block of `readme`. Returns whether the
/// README already matched.
pub fn update(readme: &Path, check: bool) -> Result<bool> {
    let root = readme.parent().unwrap_or(Path::new("."));
    let listing_path = root.join("results").join("gallery.toml");
    let listing = std::fs::read_to_string(&listing_path)
        .map_err(|e| ReportError::Io { path: listing_path.clone(), source: e })?;
    let text =
        std::fs::read_to_string(readme).map_err(|e| ReportError::Io { path: readme.to_path_buf(), source: e })?;
    let missing = || ReportError::Usage(format!("{}: no `{START} ... -->` ... `{END}` block", readme.display()));
    let start = text.find(START).ok_or_else(missing)?;
    let body_start = start + text[start..].find("-->").ok_or_else(missing)? + 3 + 1;
    let end = text[body_start..].find(END).map(|i| body_start + i).ok_or_else(missing)?;
    let generated = table(&listing, &listing_path, root)?;
    let matches = text[body_start..end] == generated;
    if !matches && !check {
        let updated = format!("{}{}{}", &text[..body_start], generated, &text[end..]);
        std::fs::write(readme, updated).map_err(|e| ReportError::Io { path: readme.to_path_buf(), source: e })?;
    }
    Ok(matches)
}
