//! KiloClaw instances component.
