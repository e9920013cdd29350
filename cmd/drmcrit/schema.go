package main

// jsonHelp documents the JSON that `drmcrit show --json DIR` prints
// (printed by `drmcrit help json` after jsonConvention; README.md has the
// same text).
const jsonHelp = `drmcrit show --json DIR prints one JSON object, schema_version 2, in the
conventions above.

Compatibility: within a schema_version fields are only added, never removed,
renamed or given another meaning. "contents" says where a BO's contents
are: "<pages file>@<offset>" (version 2 replaced version 1's per-BO
"sha256" and "content_size": images of format 2 checksum chunks of the
pages files, see drm-bo-index.img). A field the schema below says is
omitted in some case is left out then, rather than given a zero value.

{
  "schema_version": 2,
  "dir": "the checkpoint directory as given",
  "source": "criu" | "inventory",
      // criu: pids, comms and fd numbers from CRIU's images
      // inventory: no (usable) CRIU images; pids and comms from the plugin's
      //   inventory and every "fd" is null
  "inventory": {"version": 3, "plugin_version": "…", "complete": true},
  "processes": [{
      "pid": 123, "ppid": 1,           // ppid only with source "criu"
      "comm": "gpuload",
      "fds": [{"fd": 5 | null, "kind": "drm_file" | "reply_channel" | "dma_buf", "inode": 51902}],
        // only the fds that hold the plugin's objects; "inode" keys
        // drm_files[].inode, reply_channels[].inode or dma_bufs[].inode
      "cpu_mappings": [{               // BO memory mapped in the process, by address
          "start": "0x7f3a1c000000", "end": "0x7f3a1c040000", "size": 262144,
          "bo_offset": 0, "prot": "rw-", "shared": true,
          "bo_id": 7, "memfd_inode": 88213  // the BO memory's memfd at dump
      }]
  }],
  "drm_files": [{
      "inode": 51902,                  // client socket inode at dump (image key)
      "pid": 123,                      // holder when the dump paused it
      "device": "renderD128", "minor": 128,
      "driver": "amdgpu", "driver_version": 1, "gpu_id": 4098, "file_id": 3,
      "handles": [{
          "handle": 1, "bo_id": 7, "prime": false,
          "size": 262144, "domain": "VRAM" | "GTT" | "NONE", "flags": "0x3",
          "contents": "drm-pages-1.img@0", // "" when the BO has no record;
                                       // "criu's memory images (mapped)" when a
                                       // process mapped it (criu saved it)
          "mappings": [{"va": "0x100000", "size": 8192, "bo_offset": 0, "flags": "0x1"}],
          "shared_with": [Holder]      // every other holder of the same BO
      }],
      "contexts": [{
          "id": 1, "priority": 0, "guilty": false,
          "submitted": 12, "completed": 11,
          "jobs": [{                   // work saved with the context, queue order
              "fence_id": 44,
              "state": "preempted" | "queued",   // preempted: has progress
              "long_running": true,
              "commands": ["compute"],  // op names, in order
              "progress_cmd": 0,        // index of the command it stopped in
              "progress_iter": 120,     // iterations done of that command
              "iterations": 600,        // iterations of that command
              "progress_acc": 0,
              "bo_ids": [7, 8],
              "waits_on": [41]          // dump-time fences of other checkpointed
                                        // jobs it waits on (any file)
          }]
      }],
      "syncobjs": [{"handle": 1, "kind": "EMPTY" | "SIGNALED" | "JOB" | "SW_SYNC",
                    "error": 0, "fence_id": 44, "timeline": 1, "point": 2}],
                    // error, fence_id, timeline, point omitted when 0
      "sw_syncs": [{"timeline": 1, "value": 0}],
      "pending_io": Pending,           // traffic in flight on the file's own
                                       // socket; omitted when there was none
      "driver_error": "…",             // omitted unless the driver blob is unreadable
      "in_flight": InFlight            // omitted unless no task held it at the dump
  }],
  "reply_channels": [{                 // connections a process sharing a drm
                                       // file attached, so its replies reach it
      "inode": 51920, "pid": 124,      // client socket inode at dump, holder
      "file_inode": 51902,             // its drm file: drm_files[].inode
      "fds": [6],                      // fd numbers in pid, when known
      "pending_io": Pending            // omitted when nothing was in flight
  }],
  "dma_bufs": [{
      "inode": 51911, "pid": 123, "bo_id": 7,
      "size": 262144, "domain": "VRAM", "contents": "drm-pages-1.img@0",
      "fds": [7],                      // fd numbers in pid, when known
      "in_flight": InFlight            // omitted unless no task held it at the dump
  }],
  "bos": [{
      "bo_id": 7, "size": 262144, "domain": "VRAM", "flags": "0x3",
      "alignment": 0, "minor": 128,
      "dmabuf_inode": 51911,           // the shared key; 0 if never exported
      "pages_file": "drm-pages-1.img", "offset": 0,
      "cpu_mapped": false,             // true: a process mapped it; its contents
                                       // are in criu's memory images and
                                       // pages_file is ""
      "holders": [Holder]
  }],
  "warnings": ["…"],                   // CRIU images unusable, objects no task holds, …
  "problems": ["…"]                    // drmcrit verify's verdict: every reason a
                                       // restore refuses the checkpoint; [] when it restores
}

Holder = {"kind": "drm_file" | "dma_buf" | "cpu_mapping",
          "inode": 51902,              // cpu_mapping: the memfd's
          "pid": 123,
          "comm": "gpuload",           // omitted when unknown
          "handle": 1,                 // drm_file only
          "fds": [5],                  // omitted when unknown
          "address": "0x7f3a1c000000"} // cpu_mapping only
InFlight = {"queue_inode": 51990,      // the unix socket whose receive queue held it
                                       // (SCM_RIGHTS), from CRIU's sk-queues.img;
                                       // omitted without CRIU's images
            "queue_fds": [{"pid": 123, "fd": 4}]} // who holds that socket; omitted when unknown

Pending = {                            // replayed / sent again at restore, in order
    "requests": [Packet],              // received, not answered: waiting or not started
    "unread_replies": [Packet],        // sent (or ready), not read by the client
    "request_bytes": 120, "unread_reply_bytes": 40,   // totals
    "unread_reply_dmabuf_inode": 0, "unread_reply_bo_id": 0}  // the first reply's

Packet = {"op": "SUBMIT", "seq": 12, "bytes": 60,
          "status": -22,               // replies only; omitted when 0
          "dmabuf_inode": 51911, "bo_id": 7}  // a reply carrying a dma-buf
`
