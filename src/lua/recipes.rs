//! `require` for workflows: the workflow's folder first, then the user's
//! recipes folder, then the recipes built into mcc. `require("mcc")` gives
//! the constructors. Nothing else is reachable: a name is dot-separated
//! words, and a file found through a symlink must still lie in its folder.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use mlua::{Lua, Table, Value};

use super::Shared;

/// Recipes built into the binary: `(module name, source)`. Add a line when a
/// file is added to `workflows/recipes/`.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("fanout", include_str!("../../workflows/recipes/fanout.lua")),
    ("routing", include_str!("../../workflows/recipes/routing.lua")),
    ("best-of-3", include_str!("../../workflows/recipes/best-of-3.lua")),
];

/// The user's own recipes folder, such as `~/.config/mcc/recipes`.
pub fn user_folder() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "mcc").map(|d| d.config_dir().join("recipes"))
}

/// Replace the global `require`.
pub(crate) fn install(lua: &Lua, shared: &Rc<Shared>) -> mlua::Result<()> {
    let shared = shared.clone();
    let require = lua.create_function(move |lua, name: String| {
        let _nested = super::limits::Nested::enter(&format!("require(\"{name}\")"))?;
        let loaded: Table = lua.named_registry_value("mcc.loaded")?;
        if let Some(v) = loaded.get::<Option<Value>>(name.as_str())? {
            return Ok(v);
        }
        if name == "mcc" {
            let v: Value = lua.globals().get("__mcc")?;
            loaded.set("mcc", &v)?;
            return Ok(v);
        }
        let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if !name.split('.').all(word) {
            return Err(mlua::Error::runtime(format!(
                "require(\"{name}\"): a module name is words of letters, digits, `_` and `-`, joined by `.` for folders (such as \"helpers.names\")"
            )));
        }
        let (chunk_name, source) = find(&shared, &name)?;
        let value: Value = lua.load(source).set_name(format!("@{chunk_name}")).call(name.as_str())?;
        let value = if value.is_nil() { Value::Boolean(true) } else { value };
        loaded.set(name.as_str(), &value)?;
        Ok(value)
    })?;
    lua.set_named_registry_value("mcc.loaded", lua.create_table()?)?;
    lua.globals().set("require", require)
}

/// The module's chunk name and source.
fn find(shared: &Shared, name: &str) -> mlua::Result<(String, String)> {
    let rel = format!("{}.lua", name.replace('.', "/"));
    let mut looked = Vec::new();
    let mut folders = vec![shared.dir.clone()];
    folders.extend(user_folder());
    for folder in folders {
        let path = folder.join(&rel);
        if let Some((_, source)) = shared.pinned.iter().find(|(p, _)| *p == path) {
            shared.modules.borrow_mut().push((path.clone(), source.clone()));
            return Ok((shown(&shared.root, &path), source.clone()));
        }
        if path.exists() {
            let resolved = std::fs::canonicalize(&path).ok();
            let home = std::fs::canonicalize(&folder).ok();
            if !resolved.zip(home).is_some_and(|(file, home)| file.starts_with(home)) {
                return Err(mlua::Error::runtime(format!(
                    "require(\"{name}\"): {} leads outside {} (a link?); a module must lie in its folder",
                    path.display(),
                    folder.display()
                )));
            }
        }
        if let Ok(source) = std::fs::read_to_string(&path) {
            shared.modules.borrow_mut().push((path.clone(), source.clone()));
            return Ok((shown(&shared.root, &path), source));
        }
        looked.push(path.display().to_string());
    }
    if let Some((_, source)) = BUILT_IN.iter().find(|(n, _)| *n == name) {
        return Ok((format!("recipes/{name}.lua"), (*source).to_owned()));
    }
    let built: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
    Err(mlua::Error::runtime(format!(
        "require(\"{name}\"): no module found; looked in {} and the built-in recipes ({})",
        looked.join(", "),
        built.join(", ")
    )))
}

/// A path as errors show it: relative to the root when under it.
pub fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy().replace('\\', "/")
}
