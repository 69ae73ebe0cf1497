"""Test harness for the ReaScript (Lua) shims: a fake REAPER driven through lupa."""
