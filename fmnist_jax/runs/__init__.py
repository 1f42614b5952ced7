"""A run on disk: its folders and files (`files`), the one-writer lock (`lock`), Orbax checkpoints
(`checkpoint`), restoring a finished run without its data (`restore`), clean stops on signals
(`interruption`) and the process's allocator setting (`host_memory`)."""
