//! Domain logic of KiloClaw, free of I/O: ids, auth, instance record, store protocol, lifecycle, reconcile planner, Fly API types.
