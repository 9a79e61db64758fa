//! Lua workflows.
