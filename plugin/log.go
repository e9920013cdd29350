package main

/*
#include "glue.h"
*/
import "C"

import (
	"fmt"
	"strings"
	"unsafe"
)

// criuLogger writes into criu's log (print_on_level), each line prefixed
// with "drm_plugin: ". Outside criu it writes info and above to stderr.
type criuLogger struct{}

// criu's log levels (criu/include/log.h).
const (
	levelError = C.DRM_CRIU_LOG_ERROR // 1
	levelWarn  = C.DRM_CRIU_LOG_WARN  // 2
	levelInfo  = C.DRM_CRIU_LOG_INFO  // 3
	levelDebug = C.DRM_CRIU_LOG_DEBUG // 4
)

func (criuLogger) Errorf(format string, args ...any) { logf(levelError, format, args) }
func (criuLogger) Warnf(format string, args ...any)  { logf(levelWarn, format, args) }
func (criuLogger) Infof(format string, args ...any)  { logf(levelInfo, format, args) }
func (criuLogger) Debugf(format string, args ...any) { logf(levelDebug, format, args) }

func logf(level C.uint, format string, args []any) {
	if C.drm_log_enabled(level) == 0 {
		return // not shown at criu's current level: do not even format
	}
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	for line := range strings.SplitSeq(msg, "\n") {
		var p *C.char
		if line != "" {
			p = (*C.char)(unsafe.Pointer(unsafe.StringData(line)))
		}
		C.drm_log_line(level, p, C.size_t(len(line)))
	}
}
