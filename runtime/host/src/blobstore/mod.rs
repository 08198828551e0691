//! `wasi:blobstore@0.2.0-draft` for guests (what wasmCloud links): containers of objects of any
//! size up to the service's `max_object`, streamed in and out, kept in the replicated store like
//! the service's buckets — sealed under its data key, counted in its quota, fenced, erased with
//! it. The layout is in [`objects`]; the streams in [`upload`] and [`download`].

mod download;
mod objects;
mod upload;

use std::sync::Arc;

use doppel_api::Limits;
use doppel_store::{Store, Writer};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

pub use download::IncomingValue;
pub use upload::OutgoingValue;

use objects::{BlobResult, LIST_PAGE, Objects};

mod generated {
    wasmtime::component::bindgen!({
        path: "../../modules/wit/blobstore",
        world: "wasi:blobstore/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:blobstore/container.container": crate::blobstore::Container,
            "wasi:blobstore/container.stream-object-names": crate::blobstore::ObjectNames,
            "wasi:blobstore/types.outgoing-value": crate::blobstore::OutgoingValue,
            "wasi:blobstore/types.incoming-value": crate::blobstore::IncomingValue,
        },
    });
}

use generated::wasi::blobstore::{blobstore, container, types};

/// Uploads one request may have open at once (each holds up to two store entries of bytes).
const MAX_OPEN_UPLOADS: usize = 8;
/// The largest value `incoming-value-consume-sync` hands over whole.
const MAX_SYNC_READ: u64 = 16 << 20;

/// The per-request blobstore context.
pub struct BlobCtx {
    objects: Objects,
    /// Held by every open outgoing value: its count (less this one) is how many are open.
    uploads: Arc<()>,
}

impl BlobCtx {
    /// A context for one request of `service`; writes carry `writer` (see `KvCtx::new`).
    pub fn new(
        service: Arc<str>,
        limits: Arc<Limits>,
        store: Arc<dyn Store>,
        writer: Option<Writer>,
    ) -> Self {
        BlobCtx {
            objects: Objects {
                service,
                limits,
                store,
                writer,
            },
            uploads: Arc::new(()),
        }
    }
}

/// The `container` resource: a container known to exist when it was opened.
pub struct Container {
    name: String,
    created_at: u64,
}

/// The `stream-object-names` resource: a container's object names, read a page at a time.
pub struct ObjectNames {
    container: String,
    /// Names read from the store and not yet handed out.
    ready: std::collections::VecDeque<String>,
    /// The last name read from the store, where the next page starts.
    after: Option<String>,
    /// Whether the store has no more pages.
    exhausted: bool,
}

/// The borrowed view the generated `Host` traits are implemented on.
pub struct BlobView<'a> {
    ctx: &'a mut BlobCtx,
    table: &'a mut ResourceTable,
}

impl<'a> BlobView<'a> {
    /// Borrows a context and table.
    pub fn new(ctx: &'a mut BlobCtx, table: &'a mut ResourceTable) -> Self {
        BlobView { ctx, table }
    }
}

/// Gives the linker access to a request's blobstore state.
pub trait BlobState: Send {
    /// The blobstore context and the resource table of this store.
    fn blobs(&mut self) -> BlobView<'_>;
}

struct HasBlobs;

impl HasData for HasBlobs {
    type Data<'a> = BlobView<'a>;
}

/// Links `wasi:blobstore`.
pub fn add_to_linker<T: BlobState + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    blobstore::add_to_linker::<T, HasBlobs>(linker, T::blobs)?;
    container::add_to_linker::<T, HasBlobs>(linker, T::blobs)?;
    types::add_to_linker::<T, HasBlobs>(linker, T::blobs)?;
    Ok(())
}

type GuestResult<T> = wasmtime::Result<BlobResult<T>>;

impl BlobView<'_> {
    fn objects(&self) -> Objects {
        self.ctx.objects.clone()
    }

    fn container_name(&self, container: &Resource<Container>) -> wasmtime::Result<String> {
        Ok(self.table.get(container)?.name.clone())
    }

    fn open_uploads(&self) -> usize {
        Arc::strong_count(&self.ctx.uploads) - 1
    }
}

impl blobstore::Host for BlobView<'_> {
    async fn create_container(&mut self, name: String) -> GuestResult<Resource<Container>> {
        match self.objects().create_container(&name).await {
            Ok(record) => Ok(Ok(self.table.push(Container {
                name,
                created_at: record.created_at,
            })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn get_container(&mut self, name: String) -> GuestResult<Resource<Container>> {
        match self.objects().existing_container(&name).await {
            Ok(record) => Ok(Ok(self.table.push(Container {
                name,
                created_at: record.created_at,
            })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn delete_container(&mut self, name: String) -> GuestResult<()> {
        Ok(self.objects().delete_container(&name).await)
    }

    async fn container_exists(&mut self, name: String) -> GuestResult<bool> {
        Ok(self.objects().container(&name).await.map(|c| c.is_some()))
    }

    async fn copy_object(
        &mut self,
        src: types::ObjectId,
        dest: types::ObjectId,
    ) -> GuestResult<()> {
        Ok(self
            .objects()
            .copy_object(
                (&src.container, &src.object),
                (&dest.container, &dest.object),
            )
            .await)
    }

    async fn move_object(
        &mut self,
        src: types::ObjectId,
        dest: types::ObjectId,
    ) -> GuestResult<()> {
        Ok(self
            .objects()
            .move_object(
                (&src.container, &src.object),
                (&dest.container, &dest.object),
            )
            .await)
    }
}

impl container::Host for BlobView<'_> {}

impl container::HostContainer for BlobView<'_> {
    async fn name(&mut self, container: Resource<Container>) -> GuestResult<String> {
        Ok(Ok(self.container_name(&container)?))
    }

    async fn info(
        &mut self,
        container: Resource<Container>,
    ) -> GuestResult<types::ContainerMetadata> {
        let c = self.table.get(&container)?;
        Ok(Ok(types::ContainerMetadata {
            name: c.name.clone(),
            created_at: c.created_at,
        }))
    }

    async fn get_data(
        &mut self,
        container: Resource<Container>,
        name: String,
        start: u64,
        end: u64,
    ) -> GuestResult<Resource<IncomingValue>> {
        let container = self.container_name(&container)?;
        let objects = self.objects();
        let record = match objects.existing_object(&container, &name).await {
            Ok(record) => record,
            Err(e) => return Ok(Err(e)),
        };
        // Offsets are inclusive; an end past the object means "to its end".
        if start > end || (start >= record.size && record.size > 0) {
            return Ok(Err(format!(
                "bytes {start} to {end} are not in object {name:?} of {} bytes",
                record.size
            )));
        }
        let last = end.min(record.size.saturating_sub(1));
        let len = if record.size == 0 {
            0
        } else {
            last - start + 1
        };
        Ok(Ok(self.table.push(IncomingValue {
            objects,
            blob: record.blob,
            start,
            len,
        })?))
    }

    async fn write_data(
        &mut self,
        container: Resource<Container>,
        name: String,
        data: Resource<OutgoingValue>,
    ) -> GuestResult<()> {
        let container = self.container_name(&container)?;
        if let Err(e) = self.objects().check_object_name(&name) {
            return Ok(Err(e));
        }
        let value = self.table.get_mut(&data)?;
        if value.target.is_some() || value.done {
            return Ok(Err("this outgoing-value was already written".into()));
        }
        // Components differ in their order: wasmCloud's write the body, then call write-data,
        // then finish; others call write-data before writing. If the body was written and its
        // stream closed already, the value is complete and is stored now; otherwise at `finish`.
        let complete = value.stream_taken && !value.stream_open();
        if !complete {
            value.target = Some((container, name));
            return Ok(Ok(()));
        }
        Ok(value.commit(&container, &name).await)
    }

    async fn list_objects(
        &mut self,
        container: Resource<Container>,
    ) -> GuestResult<Resource<ObjectNames>> {
        let container = self.container_name(&container)?;
        Ok(Ok(self.table.push(ObjectNames {
            container,
            ready: Default::default(),
            after: None,
            exhausted: false,
        })?))
    }

    async fn delete_object(
        &mut self,
        container: Resource<Container>,
        name: String,
    ) -> GuestResult<()> {
        let container = self.container_name(&container)?;
        Ok(self.objects().delete_object(&container, &name).await)
    }

    async fn delete_objects(
        &mut self,
        container: Resource<Container>,
        names: Vec<String>,
    ) -> GuestResult<()> {
        let container = self.container_name(&container)?;
        let objects = self.objects();
        for name in names {
            if let Err(e) = objects.delete_object(&container, &name).await {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    async fn has_object(
        &mut self,
        container: Resource<Container>,
        name: String,
    ) -> GuestResult<bool> {
        let container = self.container_name(&container)?;
        Ok(self
            .objects()
            .object(&container, &name)
            .await
            .map(|o| o.is_some()))
    }

    async fn object_info(
        &mut self,
        container: Resource<Container>,
        name: String,
    ) -> GuestResult<types::ObjectMetadata> {
        let container = self.container_name(&container)?;
        Ok(self
            .objects()
            .existing_object(&container, &name)
            .await
            .map(|record| types::ObjectMetadata {
                name,
                container,
                created_at: record.created_at,
                size: record.size,
            }))
    }

    async fn clear(&mut self, container: Resource<Container>) -> GuestResult<()> {
        let container = self.container_name(&container)?;
        Ok(self.objects().clear(&container).await)
    }

    async fn drop(&mut self, container: Resource<Container>) -> wasmtime::Result<()> {
        self.table.delete(container)?;
        Ok(())
    }
}

impl container::HostStreamObjectNames for BlobView<'_> {
    async fn read_stream_object_names(
        &mut self,
        names: Resource<ObjectNames>,
        len: u64,
    ) -> GuestResult<(Vec<String>, bool)> {
        let want = usize::try_from(len).unwrap_or(usize::MAX).min(LIST_PAGE);
        let objects = self.objects();
        let stream = self.table.get_mut(&names)?;
        while stream.ready.len() < want && !stream.exhausted {
            let page = objects
                .list(
                    &stream.container,
                    stream.after.as_deref().map(str::as_bytes),
                )
                .await;
            let (page, more) = match page {
                Ok(page) => page,
                Err(e) => return Ok(Err(e)),
            };
            stream.exhausted = !more;
            stream.after = page.last().cloned().or(stream.after.take());
            stream.ready.extend(page);
        }
        let n = want.min(stream.ready.len());
        let out: Vec<String> = stream.ready.drain(..n).collect();
        let end = stream.exhausted && stream.ready.is_empty();
        Ok(Ok((out, end)))
    }

    async fn skip_stream_object_names(
        &mut self,
        names: Resource<ObjectNames>,
        num: u64,
    ) -> GuestResult<(u64, bool)> {
        match self.read_stream_object_names(names, num).await? {
            Ok((skipped, end)) => Ok(Ok((skipped.len() as u64, end))),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn drop(&mut self, names: Resource<ObjectNames>) -> wasmtime::Result<()> {
        self.table.delete(names)?;
        Ok(())
    }
}

impl types::Host for BlobView<'_> {}

impl types::HostOutgoingValue for BlobView<'_> {
    async fn new_outgoing_value(&mut self) -> wasmtime::Result<Resource<OutgoingValue>> {
        if self.open_uploads() >= MAX_OPEN_UPLOADS {
            wasmtime::bail!("a request may have at most {MAX_OPEN_UPLOADS} outgoing values open");
        }
        let value = OutgoingValue::new(self.objects(), self.ctx.uploads.clone())
            .map_err(wasmtime::Error::msg)?;
        Ok(self.table.push(value)?)
    }

    async fn outgoing_value_write_body(
        &mut self,
        value: Resource<OutgoingValue>,
    ) -> wasmtime::Result<Result<Resource<DynOutputStream>, ()>> {
        let Some(writer) = self.table.get_mut(&value)?.take_stream() else {
            return Ok(Err(()));
        };
        let stream: DynOutputStream = Box::new(writer);
        Ok(Ok(self.table.push_child(stream, &value)?))
    }

    async fn finish(&mut self, value: Resource<OutgoingValue>) -> GuestResult<()> {
        let mut outgoing = self.table.delete(value)?;
        if outgoing.done {
            return Ok(Ok(()));
        }
        let Some((container, name)) = outgoing.target.take() else {
            outgoing.abandon();
            return Ok(Err(
                "finish without write-data: the value was not given a name, nothing is stored"
                    .into(),
            ));
        };
        Ok(outgoing.commit(&container, &name).await)
    }

    async fn drop(&mut self, value: Resource<OutgoingValue>) -> wasmtime::Result<()> {
        // Dropping the value without `finish` gives it up (its `Drop`), as the proposal says.
        self.table.delete(value)?;
        Ok(())
    }
}

impl types::HostIncomingValue for BlobView<'_> {
    async fn incoming_value_consume_sync(
        &mut self,
        value: Resource<IncomingValue>,
    ) -> GuestResult<Vec<u8>> {
        let value = self.table.delete(value)?;
        let max = MAX_SYNC_READ.min(value.objects.limits.max_memory / 2);
        Ok(value.read_all(max).await)
    }

    async fn incoming_value_consume_async(
        &mut self,
        value: Resource<IncomingValue>,
    ) -> GuestResult<Resource<DynInputStream>> {
        let value = self.table.delete(value)?;
        let stream: DynInputStream = Box::new(download::BodyReader::new(value));
        Ok(Ok(self.table.push(stream)?))
    }

    async fn size(&mut self, value: Resource<IncomingValue>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&value)?.len)
    }

    async fn drop(&mut self, value: Resource<IncomingValue>) -> wasmtime::Result<()> {
        self.table.delete(value)?;
        Ok(())
    }
}
