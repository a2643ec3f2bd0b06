"""Batch routes: the job API (`/v1/batch/jobs`) and OpenAI's Batch API (`/v1/files`,
`/v1/batches`). Thin: HTTP shapes only (`batch_models`); everything else is `batch.JobManager`."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from .. import batch
from ..deps import StateDep, log_extra
from ..errors import InvalidRequest, RequestTooLarge
from ..services.state import ServerState
from .batch_models import (
    BatchCreateRequest,
    batch_view,
    file_view,
    job_accepted,
    job_view,
    list_page,
    page,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1")

#: Room for the multipart envelope around a file of exactly BATCH_MAX_UPLOAD_BYTES.
MULTIPART_OVERHEAD = 64 * 1024

UPLOAD_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        }
    }
}
FILE_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": ["batch"]},
                    },
                }
            }
        }
    }
}


def get_manager(state: StateDep) -> batch.JobManager:
    return batch.manager_of(state)


ManagerDep = Annotated[batch.JobManager, Depends(get_manager)]


async def read_form(request: Request, state: ServerState) -> tuple[FormData, UploadFile]:
    """The multipart form, refused before parsing when its declared size is over the limit.

    Parsed by hand rather than through an `UploadFile` parameter, because FastAPI would read the
    whole body before any check could run.
    """
    limit = state.settings.BATCH_MAX_UPLOAD_BYTES
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + MULTIPART_OVERHEAD:
        raise RequestTooLarge(
            f"the uploaded file is larger than the limit of {limit} bytes", param="file"
        )
    try:
        form = await request.form(max_files=1, max_fields=16)
    except HTTPException as exc:  # a malformed form, two files, too many fields
        raise InvalidRequest(f"the upload form is invalid: {exc.detail}", param="file") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        await form.close()
        raise InvalidRequest(
            "send the requests as a multipart form field named 'file'",
            param="file",
            code="missing_required_parameter",
        )
    return form, upload


# ---------------------------------------------------------------------------- the job API


@router.post("/batch/jobs", status_code=202, openapi_extra=UPLOAD_BODY)
async def create_job(
    request: Request,
    state: StateDep,
    manager: ManagerDep,
    max_tokens: Annotated[int | None, Query(ge=1)] = None,
    num_beams: Annotated[int | None, Query(ge=1)] = None,
    length_penalty: Annotated[float | None, Query(ge=-10.0, le=10.0)] = None,
    vocab_lang: str | None = None,
    vocab_n_words: int | None = None,
    vocab_unit: str | None = None,
    constraints: str | None = None,
) -> dict[str, Any]:
    params = await batch.job_params(
        state,
        max_tokens=max_tokens,
        num_beams=num_beams,
        length_penalty=length_penalty,
        vocab_lang=vocab_lang,
        vocab_n_words=vocab_n_words,
        vocab_unit=vocab_unit,
        constraints=constraints,
    )
    form, upload = await read_form(request, state)
    try:
        field = form.get("constraints")
        if isinstance(field, str):
            if constraints is not None:
                raise InvalidRequest(
                    "send constraints once: as a form field or in the query string",
                    param="constraints",
                )
            params = await batch.with_job_constraints(state, params, field)
        job = await manager.submit_job(upload.file, params)
    finally:
        await form.close()
    log_extra(request).update(job_id=job.id, items=job.total)
    return job_accepted(job)


@router.get("/batch/jobs")
async def list_jobs(
    manager: ManagerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [job_view(job, manager.ttl_seconds) for job in manager.list_jobs("job")[:limit]],
    }


@router.get("/batch/jobs/{job_id}")
async def get_job(job_id: str, manager: ManagerDep) -> dict[str, Any]:
    return job_view(manager.get(job_id, "job"), manager.ttl_seconds)


@router.get("/batch/jobs/{job_id}/results")
async def job_results(job_id: str, manager: ManagerDep) -> Response:
    body = await manager.results(job_id)
    return Response(
        body,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{job_id}-results.json"'},
    )


@router.post("/batch/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, manager: ManagerDep) -> dict[str, Any]:
    return job_view(await manager.cancel(job_id, "job"), manager.ttl_seconds)


# ---------------------------------------------------------------------- OpenAI files


@router.post("/files", openapi_extra=FILE_BODY)
async def create_file(request: Request, state: StateDep, manager: ManagerDep) -> dict[str, Any]:
    form, upload = await read_form(request, state)
    try:
        purpose = form.get("purpose")
        if not isinstance(purpose, str) or not purpose:
            raise InvalidRequest(
                "Missing required parameter: 'purpose'.",
                param="purpose",
                code="missing_required_parameter",
            )
        record = await manager.create_file(upload.file, upload.filename or "", purpose)
    finally:
        await form.close()
    return file_view(record)


@router.get("/files")
async def list_files(
    manager: ManagerDep,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
) -> dict[str, Any]:
    items, more = page(manager.list_files(purpose), lambda f: f.id, after, limit)
    return list_page([file_view(f) for f in items], more)


@router.get("/files/{file_id}")
async def get_file(file_id: str, manager: ManagerDep) -> dict[str, Any]:
    return file_view(manager.get_file(file_id))


@router.get("/files/{file_id}/content")
async def file_content(file_id: str, manager: ManagerDep) -> FileResponse:
    record = manager.get_file(file_id)
    return FileResponse(
        manager.file_content(file_id),
        media_type="application/jsonl",
        filename=record.filename,
    )


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, manager: ManagerDep) -> dict[str, Any]:
    await manager.delete_file(file_id)
    return {"id": file_id, "object": "file", "deleted": True}


# -------------------------------------------------------------------- OpenAI batches


@router.post("/batches")
async def create_batch(
    body: BatchCreateRequest, request: Request, manager: ManagerDep
) -> dict[str, Any]:
    if body.ignored_fields():
        log.info("POST /v1/batches: ignoring fields %s", body.ignored_fields())
    job = await manager.create_batch(
        body.input_file_id, body.endpoint, body.completion_window, body.metadata
    )
    log_extra(request).update(batch_id=job.id, items=job.total)
    return batch_view(job, manager.ttl_seconds)


@router.get("/batches")
async def list_batches(
    manager: ManagerDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    items, more = page(manager.list_jobs("batch"), lambda j: j.id, after, limit)
    return list_page([batch_view(job, manager.ttl_seconds) for job in items], more)


@router.get("/batches/{batch_id}")
async def get_batch(batch_id: str, manager: ManagerDep) -> dict[str, Any]:
    return batch_view(manager.get(batch_id, "batch"), manager.ttl_seconds)


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, manager: ManagerDep) -> dict[str, Any]:
    return batch_view(await manager.cancel(batch_id, "batch"), manager.ttl_seconds)
