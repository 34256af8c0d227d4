"""Plain ``nn.Module``s whose state-dict keys equal the GR00T N1.5 checkpoint's."""
