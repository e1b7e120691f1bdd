//! The built-in HTTP router.
