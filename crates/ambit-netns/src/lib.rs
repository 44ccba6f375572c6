//! Network-namespace primitives shared by the components: entering a namespace on a dedicated thread and finding the
//! processes inside one.
