//! File reservations: two in-flight tasks never write overlapping paths.

use std::path::{Component, Path, PathBuf};

/// A path a task will write, normalised so `./out/a.md` and `out/a.md` meet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reservation(PathBuf);

impl Reservation {
    pub fn new(path: &str) -> Self {
        let mut clean = PathBuf::new();
        for part in Path::new(path).components() {
            match part {
                Component::CurDir => {}
                Component::ParentDir => {
                    if !clean.pop() {
                        clean.push("..");
                    }
                }
                other => clean.push(other),
            }
        }
        Self(clean)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Same path, or one is a folder holding the other.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.0.starts_with(&other.0) || other.0.starts_with(&self.0)
    }
}

/// True when any path of `a` overlaps any path of `b`.
pub fn any_overlap(a: &[Reservation], b: &[Reservation]) -> bool {
    a.iter().any(|x| b.iter().any(|y| x.overlaps(y)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_file_and_folder_prefixes_overlap_but_siblings_do_not() {
        let r = Reservation::new;
        assert!(r("out/a.md").overlaps(&r("./out/a.md")));
        assert!(r("out").overlaps(&r("out/a.md")));
        assert!(r("out/a.md").overlaps(&r("out/")));
        assert!(!r("out/a.md").overlaps(&r("out/ab.md")));
        assert!(!r("out-a").overlaps(&r("out")));
        assert!(r("docs/../out/x").overlaps(&r("out/x")));
    }
}
