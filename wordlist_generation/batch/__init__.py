"""Batch jobs: validation at upload, an in-memory registry written through to disk, one worker.

```
params     JobParams: the job API's job-wide parameters (limits and vocabulary as chat's)
records    JobRecord, FileRecord, BatchItem
store      JobStore: the disk layout and its durable writes (blocking)
registry   Registry: jobs and files in memory, written through by one ordered I/O thread
uploads    uploads -> items -> prepared chat requests, errors located in the upload
manager    JobManager: submission, queries, cancel (what requests reach)
worker     Worker: runs jobs one at a time, in chunks, each item logged as it ends
finish     a job made terminal; its results array and OpenAI output/error files
retention  expiry of results, records and uploaded files
```

No HTTP here: the routers (`routers/batch.py`) turn these records into response shapes.
"""

from .manager import JobManager, manager_of, start_batch_worker
from .params import JobParams, job_params, with_job_constraints
from .records import BatchItem, FileRecord, JobKind, JobRecord, JobStatus
from .store import JobStore, read_results

__all__ = [
    "BatchItem",
    "FileRecord",
    "JobKind",
    "JobManager",
    "JobParams",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "job_params",
    "manager_of",
    "read_results",
    "start_batch_worker",
    "with_job_constraints",
]
