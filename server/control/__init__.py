"""The control store and the control plane: routing state every replica agrees on."""
