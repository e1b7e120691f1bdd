//! Builds: see ARCHITECTURE.md.
