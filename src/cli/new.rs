//! `mcc new NAME --recipe RECIPE` and `mcc recipes`: start a workflow from a
//! recipe a team shares: built into mcc, in the user's recipes folder, or a path.

use std::path::{Path, PathBuf};

use clap::Args;

use super::exit;
use crate::lua::recipes::user_folder;

/// Workflow recipes built into mcc: the worked examples in `workflows/`.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("demo", include_str!("../../workflows/demo.lua")),
    ("phase2", include_str!("../../workflows/phase2.lua")),
    ("map-reduce", include_str!("../../workflows/map-reduce.lua")),
    ("pipeline", include_str!("../../workflows/pipeline.lua")),
    ("review", include_str!("../../workflows/review.lua")),
    ("fix-tests", include_str!("../../workflows/fix-tests.lua")),
    ("budgeted", include_str!("../../workflows/budgeted.lua")),
];

/// Start workflows/NAME.lua from a recipe.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  mcc new docs-review --recipe review\n  mcc new ours --recipe ../team/recipes/triage.lua\n\nSee `mcc recipes` for the names. Exit codes: 0 written; 1 error (nothing is written)."
)]
pub struct NewArgs {
    /// The new workflow's name: it becomes workflows/NAME.lua.
    pub name: String,
    /// A recipe name (built in, or in your recipes folder) or a path to a .lua file.
    #[arg(long)]
    pub recipe: String,
    /// Project root (default: the nearest folder at or above this one holding .mcc or .git, as the other commands find it; else this folder).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// List the recipes `mcc new` can start from.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  mcc recipes\n\nYour own recipes go in the folder printed at the end.")]
pub struct RecipesArgs {}

/// The first comment line of a recipe, without its name prefix.
fn describe(source: &str) -> String {
    let first = source.lines().next().unwrap_or_default().trim_start_matches("--").trim();
    first.split_once(": ").map_or(first, |(_, rest)| rest).to_owned()
}

fn user_recipes() -> Vec<(String, PathBuf)> {
    let Some(folder) = user_folder() else { return Vec::new() };
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(&folder)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "lua"))
        .filter_map(|p| Some((p.file_stem()?.to_string_lossy().into_owned(), p)))
        .collect();
    found.sort();
    found
}

/// The source of a recipe by name or path.
fn find(recipe: &str) -> Result<String, String> {
    let path = Path::new(recipe);
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("lua")) || recipe.contains('/') {
        return std::fs::read_to_string(path).map_err(|e| format!("cannot read recipe {recipe}: {e}"));
    }
    if let Some((_, p)) = user_recipes().into_iter().find(|(n, _)| n == recipe) {
        return std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    }
    BUILT_IN
        .iter()
        .find(|(n, _)| *n == recipe)
        .map(|(_, s)| (*s).to_owned())
        .ok_or_else(|| format!("no recipe `{recipe}`; `mcc recipes` lists them, or pass a path to a .lua file"))
}

/// The recipe with its workflow's `name = "..."` (the first one in the file,
/// where a workflow table starts) set to `name`, so two workflows made from one
/// recipe do not share a name in `mcc status` and the store.
fn renamed(source: &str, name: &str) -> String {
    let mut out = String::with_capacity(source.len() + name.len());
    let mut done = false;
    for line in source.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let literal =
            trimmed.strip_prefix("name").map(str::trim_start).and_then(|r| r.strip_prefix('=')).map(str::trim_start);
        if !done
            && let Some(rest) = literal.and_then(|r| r.strip_prefix('"'))
            && let Some(end) = rest.find('"')
        {
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(&format!("{indent}name = \"{name}\"{}", &rest[end + 1..]));
            done = true;
        } else {
            out.push_str(line);
        }
    }
    out
}

pub fn new(args: NewArgs) -> u8 {
    let ok_name =
        !args.name.is_empty() && args.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if !ok_name {
        eprintln!("error: `{}` is not a usable name: use letters, digits, `-` and `_`, such as docs-review", args.name);
        return exit::ERROR;
    }
    let source = match find(&args.recipe) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let rel = format!("workflows/{}.lua", args.name);
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let root = match args.dir {
        Some(dir) => dir,
        None => crate::client::find_root(&cwd).or_else(|| super::check::git_root(&cwd)).unwrap_or_else(|| cwd.clone()),
    };
    let target = root.join(&rel);
    if target.exists() {
        eprintln!("error: {} exists already; choose another name or delete it first", target.display());
        return exit::ERROR;
    }
    let source = renamed(&source, &args.name);
    let written =
        std::fs::create_dir_all(target.parent().expect("has a folder")).and_then(|()| std::fs::write(&target, source));
    if let Err(e) = written {
        eprintln!("error: cannot write {}: {e}", target.display());
        return exit::ERROR;
    }
    let here = from_here(&target, &cwd);
    if here == Path::new(&rel) {
        println!("wrote {rel} from recipe {}", args.recipe);
    } else {
        let root = std::fs::canonicalize(&root).unwrap_or(root);
        println!("wrote {rel} in the project root {} from recipe {}", root.display(), args.recipe);
    }
    let here = here.display();
    println!("next: edit it, then `mcc check {here}` and `mcc run {here}`");
    exit::OK
}

/// `target` as a path to type in `cwd`: relative when `cwd` is at or
/// below the folder holding it (`../../workflows/x.lua`), else absolute.
fn from_here(target: &Path, cwd: &Path) -> PathBuf {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let (target, cwd) = (canonical(target), canonical(cwd));
    let mut up = PathBuf::new();
    // The filesystem's root is never a shared folder worth climbing to.
    for folder in cwd.ancestors().take_while(|f| f.parent().is_some()) {
        if let Ok(rest) = target.strip_prefix(folder) {
            return up.join(rest);
        }
        up.push("..");
    }
    target
}

pub fn recipes(_: RecipesArgs) -> u8 {
    for (name, source) in BUILT_IN {
        println!("{name:<12} {}", describe(source));
    }
    let mine = user_recipes();
    for (name, path) in &mine {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        println!("{name:<12} {} (yours)", describe(&text));
    }
    if let Some(folder) = user_folder() {
        println!("your recipes folder: {}", folder.display());
    }
    println!("next: mcc new NAME --recipe RECIPE");
    exit::OK
}
