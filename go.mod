module drmcr

go 1.24
