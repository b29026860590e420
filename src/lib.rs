pub mod error;
pub mod format;
pub mod storage;
pub use error::{Error, Result};
