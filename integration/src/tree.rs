//! Independent model of an image tree.
