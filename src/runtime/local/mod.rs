//! The local provider: Docker containers behind the built-in router.
