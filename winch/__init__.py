"""winch: a local forward proxy that maps internal names to the right cluster's edge and
attaches the caller's credentials, so curl, kubectl, browsers and gRPC clients just work."""
