"""DCMPNet training: config, data, depth targets, losses, the dual-task loop, distributed set-up."""
