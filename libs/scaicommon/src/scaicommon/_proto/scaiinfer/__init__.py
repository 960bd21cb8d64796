"""Generated ScaiInfer stubs (see scaicommon._proto.generate)."""
