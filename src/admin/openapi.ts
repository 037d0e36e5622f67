/**
 * The admin API's OpenAPI 3.1 document, generated from the route table and its zod schemas
 * (`z.toJSONSchema`, JSON Schema 2020-12, which OpenAPI 3.1 uses as is).
 */
import { z } from 'zod';
import type { ApiRoute } from './api-routes.ts';

const PROBLEM = {
  type: 'object',
  description: 'Problem details (RFC 9457)',
  properties: {
    type: { type: 'string' },
    title: { type: 'string' },
    status: { type: 'integer' },
    detail: { type: 'string' },
    errors: {
      type: 'array',
      items: {
        type: 'object',
        properties: { pointer: { type: 'string' }, parameter: { type: 'string' }, detail: { type: 'string' } },
        required: ['detail'],
      },
    },
  },
  required: ['type', 'title', 'status', 'detail'],
};

function jsonSchema(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
}

/** `/clients/:client_id` in the router is `/clients/{client_id}` in OpenAPI. */
export function openApiPath(routerPath: string): string {
  return routerPath.replace(/:([A-Za-z_]+)/g, '{$1}');
}

function parameters(route: ApiRoute) {
  const out: Record<string, unknown>[] = [];
  for (const [where, schema] of [['path', route.params], ['query', route.query]] as const) {
    if (!schema) continue;
    const js = jsonSchema(schema) as { properties?: Record<string, Record<string, unknown>>; required?: string[] };
    for (const [name, prop] of Object.entries(js.properties ?? {})) {
      const { description, ...rest } = prop;
      out.push({
        name,
        in: where,
        required: where === 'path' || (js.required ?? []).includes(name),
        schema: rest,
        ...(typeof description === 'string' ? { description } : {}),
      });
    }
  }
  return out;
}

export function openApiDocument(routes: readonly ApiRoute[], issuer: string) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const path = openApiPath(route.path);
    const problem = { description: 'a problem (RFC 9457)', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } };
    paths[path] ??= {};
    paths[path][route.method] = {
      operationId: route.operationId,
      summary: route.summary,
      tags: [route.tag],
      ...(route.destructive
        ? { description: 'Needs a sign-in with the second factor no older than ADMIN_REAUTH_MAX_AGE; otherwise 401 insufficient_user_authentication with max_age (RFC 9470).' }
        : {}),
      parameters: parameters(route),
      ...(route.body ? { requestBody: { required: true, content: { 'application/json': { schema: jsonSchema(route.body) } } } } : {}),
      responses: {
        [String(route.success.status)]: {
          description: route.success.description,
          content: Object.fromEntries((route.success.contentTypes ?? ['application/json']).map((t) => [t, { schema: { type: 'object' } }])),
        },
        400: problem,
        401: problem,
        403: problem,
        ...(route.params ? { 404: problem } : {}),
        ...(route.method !== 'get' ? { 409: problem } : {}),
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Custos admin API',
      version: '1',
      description:
        'The client registry, its inventory, accounts and the audit trail. Bearer access tokens issued by Custos to an internal client, ' +
        'with the custos:admin scope, for an admin account signed in with its second factor.',
    },
    servers: [{ url: `${issuer}/admin/api` }],
    security: [{ bearerAuth: [] }],
    paths,
    components: {
      securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', description: 'An access token from Custos with the custos:admin scope' } },
      schemas: { Problem: PROBLEM },
    },
  };
}
