//! KiloClaw reconciler component.
