//! Git transport: see ARCHITECTURE.md.
